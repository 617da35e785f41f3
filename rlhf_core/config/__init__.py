"""Typed project configuration, read once from `rlhf.toml` and passed down explicitly: the sections
as dataclasses with working defaults (`sections`), their checks (`validation`), reading, writing and
overriding a file (`files`), and the cpu/gpu sizing profiles (`profiles`). Imports nothing else of the
project but the tables of kinds (`rlhf_core.registry`), so every layer may read it.
"""

from rlhf_core.config.files import apply_overrides, dump_config, load_config
from rlhf_core.config.profiles import PROFILES, apply_profile, profile_config, resolve_profile
from rlhf_core.config.sections import (
    ANNOTATOR_MODELS,
    DEMONSTRATION_MODES,
    REWARD_POOLINGS,
    TRUNCATED_ADVICE,
    AuthConfig,
    Config,
    ConfigError,
    LabelingConfig,
    LoggingConfig,
    LoopConfig,
    ModelConfig,
    PolicyConfig,
    RewardConfig,
    SamplingConfig,
    SFTConfig,
)
from rlhf_core.config.validation import validate

__all__ = [name for name in dir() if not name.startswith("_")]
