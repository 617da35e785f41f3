"""The online loop around training: sampling pairs from the current policy (`sampling`), one round
of reward model -> policy -> next pairs (`rounds`), the job worker (`worker`), policy-vs-base
evaluation (`evaluation`), gold preferences, simulated annotators and their kinds (`gold`, `simulate`, `crowd`), the
end-to-end demo (`demo`) and the numbers the operator page shows (`dashboard`). It orchestrates
`training`, `models` and `data` and stores everything through `storage`.
"""
