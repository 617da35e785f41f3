"""The typed sections of `rlhf.toml`: one dataclass per table, with defaults that work."""

from __future__ import annotations

from dataclasses import dataclass, field


class ConfigError(ValueError):
    """`rlhf.toml` is malformed; the message names the file and the key."""


# `labeling.demonstrations`: whether (and how often) the labeling page offers "Write a better answer".
DEMONSTRATION_MODES = ("off", "optional", "every_n")


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
    # A mis-click is not final at once: an annotator may take back their last judgment this long after
    # saving it ("Undo" on the page; 0 turns undo off).
    undo_seconds: float = 10.0
    # What the guidelines tell annotators about responses cut at the token limit (a key of TRUNCATED_ADVICE):
    # a judgment that punishes the cut teaches the reward model a length limit it never sees.
    truncated_advice: str = "judge_content"
    # Stage 1: besides judging, annotators may write a better answer (or edit one of the two responses) for
    # SFT. "off" (the A/B flow stays fast), "optional" (a closed panel under every pair) or "every_n" (the
    # panel opens on every `demonstration_every`-th pair an annotator is served).
    demonstrations: str = "off"
    demonstration_every: int = 10


# The guidelines' sentence on cut responses, per `labeling.truncated_advice`.
TRUNCATED_ADVICE = {
    "judge_content": "Judge a cut-off response by what it says up to the cut. Do not count the cut itself "
                     "against it: the limit is the sampler's, not the model's choice.",
    "prefer_complete": "If a cut-off response and a complete one are otherwise about equally good, prefer the "
                       "complete one; otherwise judge the cut-off response by what it says up to the cut.",
    "skip": "Skip pairs in which a response is cut off (Skip, key 5); they are left for the model's next samples.",
}


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
# How reward-model training treats annotators (`reward.annotator_model`): "none" (every judgment counts alike),
# "threshold" (leave out those below `min_annotator_accuracy` on control pairs), "crowd_bt" (CrowdBT: each
# annotator's reliability and left-side bias estimated with the reward model, judgments weighted by them).
ANNOTATOR_MODELS = ("none", "threshold", "crowd_bt")


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
    # Judgments of annotators whose control-pair accuracy is below this are left out of training (0 = keep all),
    # with annotator_model "threshold" or "crowd_bt".
    min_annotator_accuracy: float = 0.0
    # One of ANNOTATOR_MODELS. crowd_bt: measured no worse than none with an honest crowd and better with a mixed
    # one (README, "Annotator model"), at ~20% more reward-model time.
    annotator_model: str = "crowd_bt"
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
    # Decisive judgments of imported pairs (`rlhf pairs import`) are human preferences like any other: trained on.
    use_imported_pairs: bool = True
    # Weight of a prior judgment (`rlhf preferences import`) relative to a human one (times its own --weight).
    prior_weight: float = 1.0
    # Train also on "edited > original" for every demonstration written as an edit of a response on the labeling
    # page (a cheap preference). Off until measured (README, "Demonstrations and SFT").
    use_edits: bool = False
    # What a policy update optimizes, from the ensemble's K members (Coste et al. 2023): "mean"; "uwo", their mean
    # minus conservative_lambda x their standard deviation; or "wco", their minimum (README, "Is the loop improving?").
    conservative: str = "mean"
    conservative_lambda: float = 1.0
    seed: int = 0


@dataclass
class PolicyConfig:
    algo: str = "grpo"  # a round algorithm of rlhf_core.registry.POLICY_ALGORITHMS: ppo, grpo, dpo, ...
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.0
    learning_rate: float = 5e-5
    kl_beta: float = 0.05
    # The KL anchor: "base" (adapters off), "previous" (the policy version the round starts from, frozen),
    # "sft" (the newest SFT version: the seeds' objective, KL to the SFT policy), or a version number such as "3".
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
    # A KL budget over rounds (nats/token to the base; 0 = none): round r may drift up to kl_budget * min(1,
    # r / kl_budget_rounds) from the base. That share is the round's stop (with max_kl_per_token, the smaller)
    # and, with kl_control = "adaptive", its target. Needs reference = "base".
    kl_budget: float = 0.0
    kl_budget_rounds: int = 3
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
    # A round updates the policy only if its reward model is measurably better than chance: the 95% Wilson lower
    # bound of its held-out accuracy (decisive held-out judgments) must exceed this (0 = always update).
    min_reward_confidence: float = 0.5
    # Stage 1 first: a round that starts while no SFT version exists fine-tunes on the demonstrations before
    # training the reward model and updating the policy (`rlhf demo` / bench: before round 1's pairs).
    sft_first: bool = False
    # "always": each new version stays current; "if_not_worse": a round first reads the evidence on the current
    # version (people's win rate against its predecessor, the new reward model's scores, the over-optimization
    # rule) and, if it says the version is worse than its predecessor, starts from the best one instead.
    promote: str = "if_not_worse"
    # Eval prompts each new version answers (and the base once) to measure the proxy gain the reward model claims
    # and the next one re-scores (0 = off).
    probe_prompts: int = 32


@dataclass
class SFTConfig:
    """Supervised fine-tuning of the `policy` adapter on demonstrations (`rlhf train-sft`, stage 1)."""

    learning_rate: float = 2e-4  # LoRA only, as the reward model's
    epochs: int = 3
    max_steps: int = 0  # optimizer steps at most (0 = no cap)
    batch_size: int = 8  # demonstrations per optimizer step
    max_length: int = 512  # prompt + answer tokens; a long prompt keeps its end, a long answer its start
    # Held-out share of prompts: their demonstrations measure the held-out NLL that picks the epoch kept.
    eval_fraction: float = 0.2
    early_stopping: bool = True  # keep the epoch (0 = the version it started from) with the lowest held-out NLL
    seed: int = 0


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
    sft: SFTConfig = field(default_factory=SFTConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
