"""Typed project configuration, read once from `rlhf.toml` and passed down explicitly."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomllib


class ConfigError(ValueError):
    """`rlhf.toml` is malformed; the message names the file and the key."""


@dataclass
class ModelConfig:
    name: str = "default"  # "default" (embedded SmolLM2-135M-Instruct) or a local HF model directory
    quantize_4bit: str = "auto"  # auto (4-bit NF4 on CUDA) | true | false
    device: str = "auto"  # auto | cpu | cuda
    # CPU only: give freed tensor memory back to the OS at once (glibc). About 40% lower peak memory of
    # a training step on SmolLM2-135M, but steps take about 45% longer (bench/train_step.py).
    release_cpu_memory: bool = False


@dataclass
class SamplingConfig:
    per_prompt: int = 2  # responses sampled per prompt; each two distinct ones form a pair
    max_new_tokens: int = 96
    temperature: float = 0.9
    top_p: float = 0.95
    batch_size: int = 8
    pool_min_open_pairs: int = 20  # the app tops the pool up below this many open pairs
    pool_refill_pairs: int = 16
    # Which of a prompt's per_prompt * (per_prompt - 1) / 2 candidate pairs go to people:
    # "all" | "random" | "uncertainty" (the reward ensemble's disagreement; random until a reward model exists).
    pair_selection: str = "all"
    max_pairs_per_prompt: int = 0  # at most this many pairs per prompt for random/uncertainty (0 = no cap)


@dataclass
class LabelingConfig:
    judgments_per_pair: int = 1  # k: how many annotators judge each pair
    lease_seconds: int = 300  # how long a served pair holds a slot for its annotator
    guidelines_file: str = "guidelines.md"
    control_rate: float = 0.1  # share of served pairs that are control pairs (known answer), when any exist
    max_prompt_chars: int = 20_000  # longer prompts are refused at import
    session_hours: float = 12.0  # a login lasts this long (sessions live in the database; logout ends one)


@dataclass
class RewardConfig:
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    learning_rate: float = 2e-4
    epochs: int = 3
    batch_size: int = 8
    eval_fraction: float = 0.2  # held-out share of prompts
    max_length: int = 512
    use_strength_margin: bool = False
    # Judgments of annotators whose control-pair accuracy is below this are left out of training (0 = keep all).
    min_annotator_accuracy: float = 0.0
    seed: int = 0


@dataclass
class PolicyConfig:
    algo: str = "grpo"  # ppo | grpo
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.0
    learning_rate: float = 5e-5
    kl_beta: float = 0.05
    # The KL anchor: "base" (adapters off), "previous" (the policy version the round starts from, frozen),
    # or a policy version number such as "3".
    reference: str = "base"
    # Stop a round's updates once a rollout's KL to the reference exceeds this (nats/token; 0 = never).
    max_kl_per_token: float = 0.0
    clip_eps: float = 0.2
    value_clip: float = 0.2
    gamma: float = 1.0
    lam: float = 0.95
    steps: int = 8  # rollout/update iterations per round
    prompts_per_step: int = 8
    group_size: int = 4  # GRPO samples per prompt
    update_epochs: int = 2
    minibatch_size: int = 8
    max_new_tokens: int = 64
    temperature: float = 1.0
    whiten_rewards: bool = True
    seed: int = 0


@dataclass
class LoopConfig:
    auto_round_every: int = 0  # start a round after this many new judgments (0 = only by hand)


@dataclass
class Config:
    database_url: str = "sqlite:///rlhf.db"  # relative SQLite paths live in the workspace
    model: ModelConfig = field(default_factory=ModelConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    labeling: LabelingConfig = field(default_factory=LabelingConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    loop: LoopConfig = field(default_factory=LoopConfig)


def _build(cls: type, data: dict[str, Any], where: str) -> Any:
    known = {f.name: f for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if key not in known:
            raise ConfigError(f"{where}: unknown key {key!r} (known: {', '.join(sorted(known))})")
        default = getattr(cls(), key)
        if dataclasses.is_dataclass(default):
            if not isinstance(value, dict):
                raise ConfigError(f"{where}: [{key}] must be a table")
            kwargs[key] = _build(type(default), value, f"{where} [{key}]")
            continue
        expected = type(default)
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
            raise ConfigError(f"{where}: {key} must be {expected.__name__}, got {value!r}")
        kwargs[key] = value
    return cls(**kwargs)


def load_config(path: Path) -> Config:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    config = _build(Config, data, str(path))
    validate(config, path)
    return config


def validate(config: Config, where: Path | str = "config") -> None:
    if config.model.quantize_4bit not in ("auto", "true", "false"):
        raise ConfigError(f"{where}: model.quantize_4bit must be auto, true or false")
    if config.policy.algo not in ("ppo", "grpo"):
        raise ConfigError(f"{where}: policy.algo must be ppo or grpo")
    if config.sampling.per_prompt < 2:
        raise ConfigError(f"{where}: sampling.per_prompt must be at least 2 to form pairs")
    if config.labeling.judgments_per_pair < 1:
        raise ConfigError(f"{where}: labeling.judgments_per_pair must be at least 1")
    if config.policy.reference not in ("base", "previous") and not config.policy.reference.isdigit():
        raise ConfigError(f"{where}: policy.reference must be base, previous or a policy version number")
    if config.policy.group_size < 2:
        raise ConfigError(f"{where}: policy.group_size must be at least 2")
    if config.sampling.pair_selection not in ("all", "random", "uncertainty"):
        raise ConfigError(f"{where}: sampling.pair_selection must be all, random or uncertainty")
    if config.sampling.max_pairs_per_prompt < 0:
        raise ConfigError(f"{where}: sampling.max_pairs_per_prompt must be 0 (no cap) or more")
    if not 0.0 <= config.labeling.control_rate <= 1.0:
        raise ConfigError(f"{where}: labeling.control_rate must be between 0 and 1")
    if config.labeling.max_prompt_chars < 1:
        raise ConfigError(f"{where}: labeling.max_prompt_chars must be at least 1")
    if not 0 < config.labeling.session_hours <= 24 * 90:
        raise ConfigError(f"{where}: labeling.session_hours must be above 0 and at most 2160 (90 days)")
    if not 0.0 <= config.reward.min_annotator_accuracy <= 1.0:
        raise ConfigError(f"{where}: reward.min_annotator_accuracy must be between 0 and 1")


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    text = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'


def dump_config(config: Config) -> str:
    """TOML text for `config`: top-level scalars first, then one table per section."""
    lines: list[str] = ["# rlhf-loop project configuration", ""]
    tables: list[tuple[str, Any]] = []
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if dataclasses.is_dataclass(value):
            tables.append((f.name, value))
        else:
            lines.append(f"{f.name} = {_toml_value(value)}")
    for name, section in tables:
        lines += ["", f"[{name}]"]
        lines += [f"{sf.name} = {_toml_value(getattr(section, sf.name))}" for sf in dataclasses.fields(section)]
    return "\n".join(lines) + "\n"
