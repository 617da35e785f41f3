"""The online loop around training: sampling pairs from the current policy (`sampling`, with the pair selection
of `pair_selection`), one round of reward model -> policy -> next pairs (`rounds`), policy-vs-base evaluation
batches (`evaluation`), the evidence each round gathers and the rules that read it (`evidence`), and the job
worker (`worker`) with what it does for each job kind (`jobs`) and when a job
request is refused (`job_rules`). It orchestrates `training`, `models` and `data` and stores everything through
`storage`.
"""
