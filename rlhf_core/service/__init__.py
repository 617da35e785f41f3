"""The operator's services, shared by the CLI and the operator page: one action service (`jobs`: rounds,
evaluation batches, SFT and any job kind; `imports`: every import kind; `exports`; `accounts`: users;
`versions`: rollback), each with one set of refusal rules and one audit call (`actor`), and the data the console shows
(`dashboard`: live status, rounds and quality figures; `playground`: "Try it" answers of two versions).
The CLI and the page render what these return; neither keeps rules of its own.
Best-of-N: N sampled answers ranked by a scorer of the registry (`best_of_n`).
"""
