"""The operator's services, shared by the CLI and the operator page: one action service (`jobs`: rounds, evaluation
batches, SFT and any job kind; `imports`: every import kind; `exports`; `accounts`: users; `versions`: rollback;
`judges`: AI judges), each with one set of refusal rules and one audit call (`actor`), and the data the console
shows (`dashboard`: live status, rounds and quality figures; `playground`: "Try it" answers of two versions;
`best_of_n`: N sampled answers ranked by a scorer of the registry), and the reward functions and reward model side
by side on a version's responses (`rewards_check`) and each reward component's curves on the console
(`reward_components`). The CLI and the page render what these return; neither keeps rules of its own.
"""
