"""The typed sections of `rlhf.toml` that serve the loop: one dataclass per table, with defaults that work, each
key with its help and, for a closed set of values, a Literal type (see `settings`). The training sections are in
`training_sections`; `Config` gathers them all."""

from __future__ import annotations

import typing
from dataclasses import dataclass, field
from typing import Literal

from rlhf_core.config.judge_sections import JudgesConfig
from rlhf_core.config.settings import setting
from rlhf_core.config.training_sections import PolicyConfig, PRMConfig, RewardConfig, SFTConfig
from rlhf_core.registry import LABELING_MODES, STEP_SPLITTERS


@dataclass
class ModelConfig:
    """The base model: which one, its precision, and how it decodes and trains."""

    name: str = setting("default", "\"default\" (the embedded SmolLM2-135M-Instruct) or a local Hugging Face model "
                                   "directory.")
    quantize_4bit: Literal["auto", "true", "false"] = setting(
        "auto", "Load the frozen base in 4-bit NF4 (bitsandbytes): auto (4-bit NF4 on CUDA, full precision on CPU), "
                "true (also on CPU) or false.")
    device: str = setting("auto", "auto (CUDA when present), cpu, cuda, or a torch device such as cuda:1.")
    release_cpu_memory: bool = setting(
        False, "CPU only: give freed tensor memory back to the OS at once (glibc). About 40% lower peak memory of a "
               "training step on SmolLM2-135M, but steps take about 45% longer (bench/train_step).")
    generation: Literal["auto", "merged", "adapter"] = setting(
        "auto", "Which weights decode: \"merged\" (a copy with the adapter merged in, bfloat16 where native), "
                "\"adapter\" (through the LoRA adapter, no extra memory) or \"auto\" (merged where bfloat16 is "
                "native: CUDA, AVX512-BF16/AMX).")
    precision: Literal["auto", "bf16", "fp32"] = setting(
        "auto", "Training and scoring passes: \"auto\" (bfloat16 autocast where native, else float32), \"bf16\" or "
                "\"fp32\" (exact runs).")
    activation_checkpointing: Literal["auto", "on", "off"] = setting(
        "auto", "\"auto\" recomputes activations only for batches of 8192 tokens or more (CHECKPOINT_MIN_TOKENS in "
                "rlhf_core/models/stack.py); \"on\" always; \"off\" never.")


@dataclass
class SamplingConfig:
    """Sampling the pairs people judge, and the pool the labeling page serves from."""

    per_prompt: int = setting(2, "Responses sampled per prompt; each two distinct ones form a pair (at least 2).")
    max_new_tokens: int = setting(96, "Most tokens of a sampled response; a response cut here is marked "
                                      "\"Cut off at N tokens\" on the labeling page.")
    temperature: float = setting(0.9, "Sampling temperature of the pairs' responses.")
    top_p: float = setting(0.95, "Nucleus sampling: the smallest set of tokens with this much probability (no "
                                 "top-k).")
    batch_size: int = setting(8, "Prompts generated together in one batch.")
    pool_min_open_pairs: int = setting(20, "The app tops the pool up below this many open pairs (0 = no top-up: "
                                           "set it on app machines when the worker samples).")
    pool_refill_pairs: int = setting(16, "Pairs one top-up of the pool samples.")
    first_batch_pairs: int = setting(
        0, "With an empty pool, a top-up first samples this many pairs from one prompt's responses alone (one small "
           "generation batch), so the first pair reaches the page sooner; then the rest (0 = off; `rlhf quickstart` "
           "sets 2).")
    pair_selection: Literal["all", "random", "uncertainty"] = setting(
        "all", "Which of a prompt's per_prompt * (per_prompt - 1) / 2 candidate pairs go to people: \"all\", "
               "\"random\" or \"uncertainty\" (the reward ensemble's disagreement; random until a reward model "
               "exists).")
    max_pairs_per_prompt: int = setting(0, "At most this many pairs per prompt for random/uncertainty (0 = no cap).")


# `labeling.demonstrations`: whether (and how often) the labeling page offers "Write a better answer".
DemonstrationMode = Literal["off", "optional", "every_n"]
DEMONSTRATION_MODES = typing.get_args(DemonstrationMode)

# The guidelines' sentence on cut responses, per `labeling.truncated_advice` (its keys are the allowed values).
TRUNCATED_ADVICE = {
    "judge_content": "Judge a cut-off response by what it says up to the cut. Do not count the cut itself "
                     "against it: the limit is the sampler's, not the model's choice.",
    "prefer_complete": "If a cut-off response and a complete one are otherwise about equally good, prefer the "
                       "complete one; otherwise judge the cut-off response by what it says up to the cut.",
    "skip": "Skip pairs in which a response is cut off (Skip, key 5); they are left for the model's next samples.",
}


@dataclass
class LabelingConfig:
    """The labeling page: judgments per pair, leases, control pairs, sessions, undo, guidelines, demonstrations."""

    judgments_per_pair: int = setting(1, "k: how many annotators judge each pair (at least 1).")
    lease_seconds: int = setting(300, "How long a served pair holds a slot for its annotator.")
    guidelines_file: str = setting("guidelines.md", "The labeling guidelines annotators see (relative to the "
                                                    "workspace).")
    control_rate: float = setting(0.1, "Share of served pairs that are control pairs (known answer), when any "
                                       "exist (0 to 1).")
    max_prompt_chars: int = setting(20_000, "Longer prompts are refused at import.")
    session_hours: float = setting(12.0, "A login lasts this long (sessions live in the database; logout ends one); "
                                         "above 0 and at most 2160 (90 days).")
    undo_seconds: float = setting(
        10.0, "A mis-click is not final at once: an annotator may take back their last judgment this long after "
              "saving it (\"Undo\" on the page; 0 turns undo off; at most 3600).")
    truncated_advice: str = setting(
        "judge_content", "What the guidelines tell annotators about responses cut at the token limit: a judgment "
                         "that punishes the cut teaches the reward model a length limit it never sees.",
        choices=TRUNCATED_ADVICE)
    demonstrations: DemonstrationMode = setting(
        "off", "Stage 1: besides judging, annotators may write a better answer (or edit one of the two responses) "
               "for SFT. \"off\" (the A/B flow stays fast), \"optional\" (a closed panel under every pair) or "
               "\"every_n\" (the panel opens on every `demonstration_every`-th pair an annotator is served).")
    demonstration_every: int = setting(10, "With demonstrations = \"every_n\": the panel opens on every this-many-th "
                                           "pair an annotator is served.")
    route: Literal["all", "judge_uncertain"] = setting(
        "all", "Which pairs people get once an AI judge (`rlhf judge`) has judged them: \"all\" (every pair, as "
               "without a judge) or \"judge_uncertain\" (first the pairs the judge is unsure of, or on which it and "
               "the current reward model disagree; of the pairs it is sure of, only a `judge_share` sample).")
    judge_share: float = setting(
        0.2, "With route = \"judge_uncertain\": the share (0 to 1) of the pairs a judge is sure of that still go to "
             "people, so that its agreement with them keeps being measured.")
    show_suggestions: bool = setting(
        False, "Show an AI judge's choice on the labeling page as a hint. A visible hint anchors people, so the "
               "judges' agreement figures count only judgments made without one.")
    mode: str = setting(
        "pairs", "What annotators label: \"pairs\" (which of two responses is better) or \"steps\" (each step of one "
                 "response good, neutral or bad, for the process reward model; pairs are served once no response "
                 "waits for step labels). A mode of rlhf_core.registry.LABELING_MODES.",
        choices=LABELING_MODES.names)
    step_sets: list[str] = setting(
        [], "Prompt sets labeled by steps while `mode` is \"pairs\": the names their prompts were imported under "
            "(`rlhf prompts import FILE`: the file's name, e.g. \"arith.jsonl\").")
    step_split: str = setting("lines", "How a response is cut into steps: \"lines\", \"numbered\" (\"1.\", \"Step "
                                       "2:\") or \"separator\" (`step_separator`).", choices=STEP_SPLITTERS.names)
    step_separator: str = setting("\n\n", "The separator of step_split = \"separator\" (default: a blank line, so "
                                          "paragraphs are steps).")
    max_steps: int = setting(12, "Steps a response is cut into at most; the rest joins the last step (1 to 50).")
    step_labels_per_response: int = setting(1, "How many annotators label the steps of each response (at least 1).")


@dataclass
class AuthConfig:
    """Logins: the failed-login limit and the password rule."""

    max_failures: int = setting(
        5, "Failed logins are counted in the database (every app process sees them), per username and per client "
           "address: `max_failures` within `window_seconds` refuses logins for `cooldown_seconds` (1 to 1000).")
    window_seconds: int = setting(900, "The window failed logins are counted in (1 to 604800: 7 days).")
    cooldown_seconds: int = setting(900, "How long logins are refused after too many failures (1 to 604800).")
    min_password_length: int = setting(8, "New accounts and new passwords (NIST SP 800-63B: at least 8; at most "
                                          "1024).")


@dataclass
class LoggingConfig:
    """Training logs besides the database (TensorBoard)."""

    report_to: Literal["none", "tensorboard"] = setting(
        "none", "\"none\" or \"tensorboard\": also write every training step (reward model, PPO, GRPO, DPO) as "
                "TensorBoard events under `dir` (needs the tensorboard package: pip install "
                "'rlhf-loop[tensorboard]').")
    dir: str = setting("runs", "Where TensorBoard events go, relative to the workspace.")


@dataclass
class LoopConfig:
    """Rounds: when they start by themselves, the reward-model gate, stage 1 first."""

    auto_round_every: int = setting(0, "Start a round after this many new judgments (0 = only by hand).")
    min_reward_confidence: float = setting(
        0.5, "A round updates the policy only if a reward model is measurably better than chance: the 95% Wilson "
             "lower bound of the evidence must exceed this (0 = always update). The evidence: every decisive "
             "judgment predicted once by a cross-fitted probe (5 folds by prompt, counted at half weight), plus the "
             "previous reward model's accuracy on the judgments it never saw (fresh accuracy). With CrowdBT, both "
             "count the labels it believes (a coin-flipper's and a left-clicker's left picks left out; the probe's "
             "then at a third).")
    sft_first: bool = setting(
        False, "Stage 1 first: a round that starts while no SFT version exists fine-tunes on the demonstrations "
               "before training the reward model and updating the policy (`rlhf demo` / bench: before round 1's "
               "pairs).")
    promote: Literal["always", "if_not_worse"] = setting(
        "if_not_worse", "\"always\": each new version stays current. \"if_not_worse\": a round first reads the "
                        "evidence on the current version (people's win rate against its predecessor, the new reward "
                        "model's scores of both, the over-optimization rule) and, if it says the version is worse "
                        "than its predecessor, makes the predecessor current and starts from it.")
    mode: Literal["standard", "verifiable"] = setting(
        "standard", "\"standard\": rounds learn from people's judgments (reward model, gate, policy update). "
                    "\"verifiable\": rounds run GRPO (or PPO) on the reward functions alone ([[reward.functions]]), "
                    "with no reward model and no judgments needed; the labeling page still serves pairs for spot "
                    "checks.")
    probe_prompts: int = setting(
        32, "Eval prompts each new version answers (and the base once) to measure the proxy gain its reward model "
            "claims and the next one re-scores (0 = off; train prompts when there are no eval prompts).")


@dataclass
class RecoveryConfig:
    """A loop that survives: jobs queued again after their worker dies, training checkpoints, start-up retries and
    the checks of `rlhf doctor`."""

    job_attempts: int = setting(
        3, "How many times a job may be started in all: a job whose worker died (killed, crashed, stopped, its "
           "heartbeat stale) is queued again until then, then marked failed (1 = never again by itself).")
    retry_backoff_s: float = setting(10.0, "Seconds a re-queued job waits before a worker takes it again, doubling "
                                           "with each attempt (10, 20, 40, ...).")
    checkpoint_every: int = setting(
        10, "Training (reward model, PPO/GRPO, DPO, SFT) writes a checkpoint every this many steps: adapter, "
            "optimizer, RNG state and data order, atomically; a re-queued job resumes from it (0 = off).")
    connect_attempts: int = setting(5, "Tries to reach the database when a command starts, waiting 1, 2, 4, ... s "
                                       "between them, before it stops with one line saying what to fix.")
    min_free_disk_mb: int = setting(1024, "`rlhf doctor` fails when the workspace's filesystem has less free space "
                                          "than this (MiB).")


@dataclass
class Config:
    """The whole `rlhf.toml`: the top-level keys and one table per section."""

    database_url: str = setting("sqlite:///rlhf.db", "sqlite:///FILE or postgresql://...; relative SQLite paths "
                                                     "live in the workspace.")
    profile: str = setting("default", "The sizing `rlhf init --profile` applied: cpu, gpu (or default: none).")
    model: ModelConfig = field(default_factory=ModelConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    labeling: LabelingConfig = field(default_factory=LabelingConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    loop: LoopConfig = field(default_factory=LoopConfig)
    sft: SFTConfig = field(default_factory=SFTConfig)
    judges: JudgesConfig = field(default_factory=JudgesConfig)
    prm: PRMConfig = field(default_factory=PRMConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    recovery: RecoveryConfig = field(default_factory=RecoveryConfig)
