"""Reward functions: checks that score a response beside (or instead of) the learned reward model
(`[[reward.functions]]`; the kinds are `rlhf_core.registry.REWARD_FUNCTION_KINDS`). Building the configured
functions and scoring responses with all of them (`functions`: `score_with_functions`, the one entry point of policy
updates, `rlhf rewards check` and best-of-N), the kinds that read the response (`kinds`) with their answer matching
(`answers`), and `python_tests`, which runs a response's code in a sandbox (`sandbox`, and the process it starts,
`sandbox_child`). Reads the configuration and the registry only; no model code.
"""

from rlhf_core.rewards.functions import (
    FunctionScores,
    RewardFunction,
    RewardFunctionError,
    build_reward_functions,
    missing_columns,
    score_with_functions,
)

__all__ = [name for name in dir() if not name.startswith("_")]
