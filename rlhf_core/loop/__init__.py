"""The online loop around training: sampling pairs from the current policy (`sampling`), one round
of reward model -> policy -> next pairs (`rounds`), the job worker (`worker`), policy-vs-base
evaluation (`evaluation`), gold preferences and simulated annotators (`gold`, `simulate`), the
end-to-end demo (`demo`) and the numbers the operator page shows (`dashboard`). It orchestrates
`training`, `models` and `data` and stores everything through `storage`.
"""
