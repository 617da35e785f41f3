"""Sizing profiles (`rlhf init --profile cpu|gpu|auto`): the settings each changes from the defaults."""

from __future__ import annotations

from typing import Any

from rlhf_core.config.sections import Config
from rlhf_core.config.settings import ConfigError

# Settings a profile changes from the defaults, per section. "cpu": a round (sample -> reward model ->
# policy update) of the default 135M model in minutes on 2 cores; "gpu": bigger batches and longer answers.
PROFILES: dict[str, dict[str, dict[str, Any]]] = {
    "cpu": {
        "sampling": {"per_prompt": 4, "max_new_tokens": 64, "batch_size": 32, "pool_refill_pairs": 32},
        # bench/loop_efficacy.py, 3 GRPO rounds x 300 judgments (sentiment): lr 1e-4 rounds add at KL ~0.1 (2e-4: KL
        # 0.165; 5e-5: too little); 45 warm-started reward steps keep rounds near the first's time (docs/results.md).
        "reward": {"epochs": 2, "batch_size": 8, "max_length": 256, "warm_start": True, "max_steps": 45},
        # --algo dpo, gold keyword: dpo_beta 0.1 drifted to KL 0.25 by round 2 (0.64 by round 3); 0.5 reached 82.0%
        # vs the base at KL 0.073 after round 3.
        "policy": {"steps": 8, "prompts_per_step": 8, "group_size": 4, "max_new_tokens": 48, "update_epochs": 1,
                   "minibatch_size": 8, "learning_rate": 1e-4, "dpo_beta": 0.5},
    },
    "gpu": {
        "sampling": {"per_prompt": 4, "max_new_tokens": 128, "batch_size": 128, "pool_refill_pairs": 64},
        "reward": {"epochs": 3, "batch_size": 16, "max_length": 512},
        "policy": {"steps": 8, "prompts_per_step": 32, "group_size": 8, "max_new_tokens": 128, "update_epochs": 2,
                   "minibatch_size": 32},
    },
}


def resolve_profile(profile: str) -> str:
    """"auto" -> "gpu" when CUDA is available, else "cpu"; "cpu" and "gpu" stay as they are."""
    if profile not in ("auto", *PROFILES):
        raise ConfigError(f"unknown profile {profile!r}; expected auto, {', '.join(PROFILES)}")
    if profile != "auto":
        return profile
    import torch  # only here: reading a config must not pay for torch

    return "gpu" if torch.cuda.is_available() else "cpu"


def apply_profile(config: Config, profile: str) -> Config:
    """`config` with the settings of `profile` ("cpu", "gpu" or "auto") written over it, in place."""
    for section, values in PROFILES[resolve_profile(profile)].items():
        for key, value in values.items():
            setattr(getattr(config, section), key, value)
    return config


def profile_config(profile: str) -> Config:
    """A fresh default Config with `profile` applied."""
    return apply_profile(Config(), profile)
