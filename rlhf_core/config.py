"""Typed project configuration, read once from `rlhf.toml` and passed down explicitly."""

from __future__ import annotations

import dataclasses
import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomllib


class ConfigError(ValueError):
    """`rlhf.toml` is malformed; the message names the file and the key."""


POLICY_ALGORITHMS = ("ppo", "grpo", "dpo")


@dataclass
class ModelConfig:
    name: str = "default"  # "default" (embedded SmolLM2-135M-Instruct) or a local HF model directory
    quantize_4bit: str = "auto"  # auto (4-bit NF4 on CUDA) | true | false
    device: str = "auto"  # auto | cpu | cuda
    # CPU only: give freed tensor memory back to the OS at once (glibc). About 40% lower peak memory of
    # a training step on SmolLM2-135M, but steps take about 45% longer (bench/train_step.py).
    release_cpu_memory: bool = False
    # Which weights decode: "merged" (a copy with the adapter merged in, bfloat16 where native), "adapter"
    # (through the LoRA adapter, no extra memory) or "auto" (merged where bfloat16 is native: CUDA, AVX512-BF16/AMX).
    generation: str = "auto"
    # Training and scoring passes: "auto" (bfloat16 autocast where native, else float32), "bf16" or "fp32".
    precision: str = "auto"
    # "auto" recomputes activations only for big batches (see CHECKPOINT_MIN_TOKENS); "on" always; "off" never.
    activation_checkpointing: str = "auto"


@dataclass
class SamplingConfig:
    per_prompt: int = 2  # responses sampled per prompt; each two distinct ones form a pair
    max_new_tokens: int = 96
    temperature: float = 0.9
    top_p: float = 0.95
    batch_size: int = 8
    pool_min_open_pairs: int = 20  # the app tops the pool up below this many open pairs
    pool_refill_pairs: int = 16
    # With an empty pool, a top-up first samples this many pairs from one prompt's responses alone (one
    # small generation batch), so the first pair reaches the page sooner; then the rest (0 = off;
    # `rlhf quickstart` sets 2).
    first_batch_pairs: int = 0
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
class AuthConfig:
    # Failed logins are counted in the database (every app process sees them), per username and per
    # client address: `max_failures` within `window_seconds` refuses logins for `cooldown_seconds`.
    max_failures: int = 5
    window_seconds: int = 900
    cooldown_seconds: int = 900
    min_password_length: int = 8  # new accounts and new passwords (NIST SP 800-63B: at least 8)

# How the reward head pools a response's token states: their mean, sum, both, or the last token (TRL's).
REWARD_POOLINGS = ("last", "mean", "sum", "mean+sum")


@dataclass
class RewardConfig:
    lora_r: int = 16
    lora_alpha: int = 32
    # No dropout (as TRL's RewardTrainer): measured 25% faster steps and 26% less peak memory (SmolLM2-135M).
    lora_dropout: float = 0.0
    learning_rate: float = 2e-4
    epochs: int = 3
    # Optimizer steps per training at most (0 = no cap): with warm_start, rounds cost the same as judgments pile up.
    max_steps: int = 0
    batch_size: int = 8  # pairs per optimizer step (at least; with group_by_prompt, whole prompts fill it)
    # All of a prompt's judged pairs in one batch (InstructGPT's batching); false: pairs drawn one by one. Measured
    # (bench/reward_learning.py, sentiment, 300 judgments): 0.61x the time but 0.596 vs 0.647 gold accuracy, so off.
    group_by_prompt: bool = False
    eval_fraction: float = 0.2  # held-out share of prompts
    max_length: int = 512
    use_strength_margin: bool = False
    # Judgments of annotators whose control-pair accuracy is below this are left out of training (0 = keep all).
    min_annotator_accuracy: float = 0.0
    # K reward heads on one LoRA trunk, each on a bootstrap resample; scored by their mean, their spread is the
    # uncertainty that pair selection uses. Heads are cheap: the trunk's pass is shared.
    ensemble: int = 3
    pooling: str = "mean+sum"  # gold counts and lengths are sums, which a mean hides (README, "Reward model")
    # Layers the head reads, as fractions of the depth (0 = token embeddings, 1 = last), concatenated, standardized.
    feature_depths: list[float] = field(default_factory=lambda: [0.0, 0.5, 1.0])
    warm_start: bool = False  # start from the current reward model instead of from scratch
    early_stopping: bool = True  # keep the epoch with the lowest held-out loss (needs eval_fraction > 0)
    ties: str = "drop"  # "drop": ties are left out of Bradley-Terry; "davidson": modelled (Davidson 1970)
    head_init: str = "probe"  # linear probes on the features first, then fine-tune all (LP-FT); or "random"
    calibrate: bool = False  # temperature-scale the scores on the held-out pairs (measured worse on other prompts)
    seed: int = 0


@dataclass
class PolicyConfig:
    algo: str = "grpo"  # ppo | grpo | dpo (online iterative DPO on the round's judged pairs)
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.0
    learning_rate: float = 5e-5
    kl_beta: float = 0.05
    # The KL anchor: "base" (adapters off), "previous" (the policy version the round starts from, frozen),
    # or a policy version number such as "3".
    reference: str = "base"
    # Stop a round's updates once a rollout's KL to the reference exceeds this (nats/token; 0 = never).
    # With reference = "previous" it bounds each round's step (a trust region per round); DPO checks it
    # against the exact KL on held-out responses after each step.
    max_kl_per_token: float = 0.0
    # PPO/GRPO: "fixed" keeps kl_beta; "adaptive" moves it towards target_kl (Ziegler et al. 2019), each step by
    # at most ±20% x samples per step / kl_horizon, and the next round starts from where it ended.
    kl_control: str = "fixed"
    target_kl: float = 0.05  # nats/token (k3 estimate of the rollout's KL to the reference)
    kl_horizon: int = 256  # samples
    # GRPO loss: "grpo" (per-response token mean, advantages / group std) or "dr_grpo" (Dr. GRPO: token sum over a
    # constant length, no std scaling, so length and prompt difficulty do not reweight the gradient).
    loss_type: str = "grpo"
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
    # Rollouts may not end their turn before this many tokens (0 = free); benchmarks force full length with it.
    min_new_tokens: int = 0
    temperature: float = 1.0
    whiten_rewards: bool = True
    seed: int = 0
    # DPO (algo = "dpo"): the implicit-reward scale β, and conservative DPO's assumed share of flipped labels.
    dpo_beta: float = 0.1
    dpo_label_smoothing: float = 0.0
    dpo_learning_rate: float = 1e-4
    dpo_epochs: int = 2  # passes over the round's pairs
    dpo_batch_size: int = 8  # pairs per optimizer step
    # Measure the exact KL on held-out responses every this many steps (and on the last): about a quarter of a
    # step's time on a CPU (SmolLM2-135M), so the curve and the max_kl_per_token check are sampled.
    dpo_kl_every: int = 4
    # Also train on judged pairs sampled up to this many rounds before the current policy (0: this round's only).
    dpo_past_rounds: int = 0
    # Add this many best-vs-worst pairs of group_size fresh policy samples per prompt, ranked by the reward model.
    dpo_rm_pairs: int = 0


@dataclass
class LoggingConfig:
    # "none" or "tensorboard": also write every training step (reward model, PPO, GRPO, DPO) as TensorBoard
    # events under `dir` (needs the tensorboard package: pip install 'rlhf-loop[tensorboard]').
    report_to: str = "none"
    dir: str = "runs"  # relative to the workspace


@dataclass
class LoopConfig:
    auto_round_every: int = 0  # start a round after this many new judgments (0 = only by hand)


@dataclass
class Config:
    database_url: str = "sqlite:///rlhf.db"  # relative SQLite paths live in the workspace
    profile: str = "default"  # the sizing `rlhf init --profile` applied: cpu, gpu (or default: none)
    model: ModelConfig = field(default_factory=ModelConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    labeling: LabelingConfig = field(default_factory=LabelingConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    loop: LoopConfig = field(default_factory=LoopConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)


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
        if expected is list and isinstance(value, list):  # lists of fractions: 1 means 1.0
            value = [float(v) if isinstance(v, int) and not isinstance(v, bool) else v for v in value]
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
    if config.model.generation not in ("auto", "merged", "adapter"):
        raise ConfigError(f"{where}: model.generation must be auto, merged or adapter")
    if config.model.precision not in ("auto", "bf16", "fp32"):
        raise ConfigError(f"{where}: model.precision must be auto, bf16 or fp32")
    if config.model.activation_checkpointing not in ("auto", "on", "off"):
        raise ConfigError(f"{where}: model.activation_checkpointing must be auto, on or off")
    if config.policy.algo not in POLICY_ALGORITHMS:
        raise ConfigError(f"{where}: policy.algo must be ppo, grpo or dpo")
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
    if config.sampling.first_batch_pairs < 0:
        raise ConfigError(f"{where}: sampling.first_batch_pairs must be 0 (off) or more")
    if config.sampling.max_pairs_per_prompt < 0:
        raise ConfigError(f"{where}: sampling.max_pairs_per_prompt must be 0 (no cap) or more")
    if not 0.0 <= config.labeling.control_rate <= 1.0:
        raise ConfigError(f"{where}: labeling.control_rate must be between 0 and 1")
    if config.labeling.max_prompt_chars < 1:
        raise ConfigError(f"{where}: labeling.max_prompt_chars must be at least 1")
    if config.reward.ensemble < 1:
        raise ConfigError(f"{where}: reward.ensemble must be at least 1")
    if config.reward.max_steps < 0:
        raise ConfigError(f"{where}: reward.max_steps must be at least 0 (0 = no cap)")
    if config.reward.pooling not in REWARD_POOLINGS:
        raise ConfigError(f"{where}: reward.pooling must be one of {', '.join(REWARD_POOLINGS)}")
    if not config.reward.feature_depths or not all(isinstance(d, float) and 0 <= d <= 1
                                                   for d in config.reward.feature_depths):
        raise ConfigError(f"{where}: reward.feature_depths must be a non-empty list of fractions in [0, 1], got "
                          f"{config.reward.feature_depths!r}")
    if config.reward.head_init not in ("random", "probe"):
        raise ConfigError(f"{where}: reward.head_init must be random or probe")
    if config.reward.ties not in ("drop", "davidson"):
        raise ConfigError(f"{where}: reward.ties must be drop or davidson")
    if not 0 < config.labeling.session_hours <= 24 * 90:
        raise ConfigError(f"{where}: labeling.session_hours must be above 0 and at most 2160 (90 days)")
    if not 0.0 <= config.reward.min_annotator_accuracy <= 1.0:
        raise ConfigError(f"{where}: reward.min_annotator_accuracy must be between 0 and 1")
    _validate_policy_update(config.policy, where)
    _validate_logging(config.logging, where)
    _validate_auth(config.auth, where)


def _validate_auth(auth: AuthConfig, where: Path | str) -> None:
    if not 1 <= auth.max_failures <= 1000:
        raise ConfigError(f"{where}: auth.max_failures must be between 1 and 1000")
    for key in ("window_seconds", "cooldown_seconds"):
        if not 1 <= getattr(auth, key) <= 7 * 86400:
            raise ConfigError(f"{where}: auth.{key} must be between 1 and 604800 (7 days)")
    if not 8 <= auth.min_password_length <= 1024:
        raise ConfigError(f"{where}: auth.min_password_length must be between 8 and 1024")


def _validate_policy_update(policy: PolicyConfig, where: Path | str) -> None:
    if policy.kl_control not in ("fixed", "adaptive"):
        raise ConfigError(f"{where}: policy.kl_control must be fixed or adaptive")
    if policy.target_kl <= 0 or policy.kl_horizon < 1:
        raise ConfigError(f"{where}: policy.target_kl must be > 0 and policy.kl_horizon at least 1")
    if policy.loss_type not in ("grpo", "dr_grpo"):
        raise ConfigError(f"{where}: policy.loss_type must be grpo or dr_grpo")
    if policy.dpo_beta <= 0 or policy.dpo_learning_rate <= 0:
        raise ConfigError(f"{where}: policy.dpo_beta and policy.dpo_learning_rate must be > 0")
    if not 0.0 <= policy.dpo_label_smoothing < 0.5:
        raise ConfigError(f"{where}: policy.dpo_label_smoothing must be at least 0 and below 0.5")
    if policy.dpo_epochs < 1 or policy.dpo_batch_size < 1 or policy.dpo_kl_every < 1:
        raise ConfigError(f"{where}: policy.dpo_epochs, dpo_batch_size and dpo_kl_every must be at least 1")
    if policy.dpo_past_rounds < 0 or policy.dpo_rm_pairs < 0:
        raise ConfigError(f"{where}: policy.dpo_past_rounds and policy.dpo_rm_pairs must be 0 or more")


def _validate_logging(logging: LoggingConfig, where: Path | str) -> None:
    if logging.report_to not in ("none", "tensorboard"):
        raise ConfigError(f"{where}: logging.report_to must be none or tensorboard")
    if not logging.dir.strip():
        raise ConfigError(f"{where}: logging.dir must name a folder (relative to the workspace)")
    if logging.report_to == "tensorboard" and importlib.util.find_spec("tensorboard") is None:
        raise ConfigError(f"{where}: logging.report_to = \"tensorboard\" needs the tensorboard package: "
                          "pip install 'rlhf-loop[tensorboard]' (or set report_to = \"none\")")


def apply_overrides(config: Config, items: list[str]) -> None:
    """`section.key=value` strings (benchmarks' --set) over `config`, each parsed as the key's type (a list:
    comma-separated numbers), then validated."""
    parsers = {bool: lambda v: v == "true", list: lambda v: [float(x) for x in v.split(",") if x.strip()]}
    for item in items:
        key, _, value = item.partition("=")
        section, _, name = key.partition(".")
        target = getattr(config, section, None)
        if not dataclasses.is_dataclass(target) or not hasattr(target, name):
            raise ConfigError(f"--set {item!r}: no setting {key!r} (expected section.key=value)")
        current = getattr(target, name)
        setattr(target, name, parsers.get(type(current), type(current))(value))
    validate(config, "--set")


def _toml_value(value: Any) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
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


# Settings a profile changes from the defaults, per section. "cpu": a round (sample -> reward model ->
# policy update) of the default 135M model in minutes on 2 cores; "gpu": bigger batches and longer answers.
PROFILES: dict[str, dict[str, dict[str, Any]]] = {
    "cpu": {
        "sampling": {"per_prompt": 4, "max_new_tokens": 64, "batch_size": 32, "pool_refill_pairs": 32},
        # bench/loop_efficacy.py, 3 GRPO rounds x 300 judgments (sentiment): lr 1e-4 rounds add at KL ~0.1 (2e-4: KL
        # 0.165; 5e-5: too little); 45 warm-started reward steps keep rounds near the first's time (README).
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
