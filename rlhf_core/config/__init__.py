"""Typed project configuration, read once from `rlhf.toml` and passed down explicitly: how a key is declared with its
help and allowed values (`settings`), the sections as dataclasses with working defaults (`sections`, the training
ones in `training_sections`, AI judges' in `judge_sections`), their checks (`validation`), reading, writing and
overriding a file (`files`), one `[[reward.functions]]` entry and its checks (`reward_functions`), the cpu/gpu
sizing profiles (`profiles`), and the Markdown reference of every key, made from the declarations (`reference`).
Imports nothing else of the project but the tables of kinds
(`rlhf_core.registry`), so every layer may read it.
"""

from rlhf_core.config.files import apply_overrides, dump_config, load_config
from rlhf_core.config.judge_sections import JudgesConfig
from rlhf_core.config.profiles import PROFILES, apply_profile, profile_config, resolve_profile
from rlhf_core.config.reference import configuration_reference
from rlhf_core.config.reward_functions import RewardFunctionConfig
from rlhf_core.config.sections import (
    DEMONSTRATION_MODES,
    TRUNCATED_ADVICE,
    AuthConfig,
    Config,
    LabelingConfig,
    LoggingConfig,
    LoopConfig,
    ModelConfig,
    RecoveryConfig,
    SamplingConfig,
)
from rlhf_core.config.settings import ConfigError, Setting, allowed_values, declared_settings, setting
from rlhf_core.config.training_sections import (
    ANNOTATOR_MODELS,
    REWARD_POOLINGS,
    PolicyConfig,
    PRMConfig,
    RewardConfig,
    SFTConfig,
)
from rlhf_core.config.validation import validate

__all__ = [name for name in dir() if not name.startswith("_")]
