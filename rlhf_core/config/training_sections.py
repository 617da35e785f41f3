"""The typed sections of `rlhf.toml` that train: the reward model (`[reward]`), the policy updates (`[policy]`) and
supervised fine-tuning (`[sft]`) and the process reward model (`[prm]`), declared as in `sections`."""

from __future__ import annotations

import typing
from dataclasses import dataclass
from typing import Literal

from rlhf_core.config.reward_functions import RewardFunctionConfig
from rlhf_core.config.settings import setting
from rlhf_core.registry import round_algorithms

# How the reward head pools a response's token states: their mean, sum, both, or the last token (TRL's).
RewardPooling = Literal["last", "mean", "sum", "mean+sum"]
REWARD_POOLINGS = typing.get_args(RewardPooling)
# How reward-model training treats annotators (`reward.annotator_model`): "none" (every judgment counts alike),
# "threshold" (leave out those below `min_annotator_accuracy` on control pairs), "crowd_bt" (CrowdBT: each
# annotator's reliability and left-side bias estimated with the reward model, judgments weighted by them).
AnnotatorModel = Literal["none", "threshold", "crowd_bt"]
ANNOTATOR_MODELS = typing.get_args(AnnotatorModel)


@dataclass
class RewardConfig:
    """The LoRA reward model (Bradley-Terry): its adapter, training, heads, features and annotator model."""

    lora_r: int = setting(16, "Rank of the reward LoRA adapter.")
    lora_alpha: int = setting(32, "LoRA alpha (scale alpha / r) of the reward adapter.")
    lora_dropout: float = setting(0.0, "No dropout (as TRL's RewardTrainer): measured 25% faster steps and 26% less "
                                       "peak memory (SmolLM2-135M).")
    learning_rate: float = setting(2e-4, "Learning rate of the reward adapter and heads.")
    epochs: int = setting(3, "Passes over the training judgments.")
    max_steps: int = setting(0, "Optimizer steps per training at most (0 = no cap): with warm_start, rounds cost the "
                                "same as judgments pile up.")
    batch_size: int = setting(8, "Pairs per optimizer step (at least; with group_by_prompt, whole prompts fill it).")
    group_by_prompt: bool = setting(
        False, "All of a prompt's judged pairs in one batch (InstructGPT's batching); false: pairs drawn one by one. "
               "Measured (bench/reward_learning.py, sentiment, 300 judgments): 0.61x the time but 0.596 vs 0.647 "
               "gold accuracy, so off.")
    eval_fraction: float = setting(0.2, "Held-out share of prompts.")
    max_length: int = setting(512, "Prompt + response tokens at most (a long prompt takes at most half of them).")
    use_strength_margin: bool = setting(False, "Add a margin from the annotator's strength to the Bradley-Terry "
                                               "loss.")
    min_annotator_accuracy: float = setting(
        0.0, "Judgments of annotators whose control-pair accuracy is below this are left out of training (0 = keep "
             "all), with annotator_model \"threshold\" or \"crowd_bt\" (0 to 1).")
    annotator_model: AnnotatorModel = setting(
        "crowd_bt", "How training treats annotators: \"none\" (every judgment counts alike), \"threshold\" (leave "
                    "out those below `min_annotator_accuracy` on control pairs) or \"crowd_bt\" (CrowdBT: each "
                    "annotator's reliability and left-side bias estimated with the reward model, judgments weighted "
                    "by them). crowd_bt: measured no worse than none with an honest crowd and better with a mixed one "
                    "(docs/guide/annotator-model.md), at ~20% more reward-model time.")
    ensemble: int = setting(
        3, "K reward heads on one LoRA trunk, each on a bootstrap resample; scored by their mean, their spread is the "
           "uncertainty that pair selection uses. Heads are cheap: the trunk's pass is shared.")
    pooling: RewardPooling = setting(
        "mean+sum", "How the head pools a response's token states: their mean, sum, both, or the last token (TRL's). "
                    "Gold counts and lengths are sums, which a mean hides (docs/guide/training.md).")
    feature_depths: list[float] = setting(
        [0.0, 0.5, 1.0], "Layers the head reads, as fractions of the depth (0 = token embeddings, 1 = last), "
                         "concatenated, standardized.")
    warm_start: bool = setting(False, "Start from the current reward model instead of from scratch.")
    early_stopping: bool = setting(True, "Keep the epoch with the lowest held-out loss (needs eval_fraction > 0).")
    ties: Literal["drop", "davidson"] = setting(
        "drop", "\"drop\": ties are left out of Bradley-Terry; \"davidson\": modelled (Davidson 1970).")
    head_init: Literal["probe", "random"] = setting(
        "probe", "\"probe\": linear probes on the features first, then fine-tune all (LP-FT); or \"random\".")
    calibrate: bool = setting(False, "Temperature-scale the scores on the held-out pairs (measured worse on other "
                                     "prompts).")
    use_imported_pairs: bool = setting(True, "Decisive judgments of imported pairs (`rlhf pairs import`) are human "
                                             "preferences like any other: trained on.")
    ai_weight: float = setting(
        1.0, "The most an AI judge's judgment (`rlhf judge`) counts relative to a human one: its CrowdBT weight, "
             "capped at this (0 = AI judgments unused). Held-out figures count people's judgments only.")
    prior_weight: float = setting(1.0, "Weight of a prior judgment (`rlhf preferences import`) relative to a human "
                                       "one (times its own --weight; 0 = priors unused).")
    use_edits: bool = setting(
        False, "Train also on \"edited > original\" for every demonstration written as an edit of a response on the "
               "labeling page (a cheap preference). Off until measured (docs/guide/sft.md).")
    conservative: Literal["mean", "uwo", "wco"] = setting(
        "mean", "What a policy update optimizes from the ensemble's members (Coste et al. 2023): their mean; \"uwo\", "
                "their mean minus conservative_lambda times their standard deviation; or \"wco\", their minimum. "
                "PPO, GRPO and DPO's reward-ranked pairs read it.")
    conservative_lambda: float = setting(1.0, "UWO's λ: how many member standard deviations are taken off the mean "
                                              "(at least 0).")
    seed: int = setting(0, "Random seed of reward-model training (held-out split, bootstrap resamples, batches).")
    functions: list[RewardFunctionConfig] = setting(
        [], "Reward functions beside the reward model: `[[reward.functions]]` tables, each a registered kind or "
            "\"module:function\" with TRL's signature, with a weight (keys: the table below). PPO, GRPO and DPO's "
            "reward-ranked pairs score with them and the reward model together (reward.combine); with loop.mode = "
            "\"verifiable\", with them alone.")
    combine: Literal["sum", "normalize_then_sum"] = setting(
        "sum", "How the reward model and the functions make one score: \"sum\" (model_weight x the reward model + "
               "each weight x its function; a None counts 0) or \"normalize_then_sum\" (each component z-scored over "
               "a rollout's responses it applies to first, so weights compare components of any scale).")
    model_weight: float = setting(1.0, "The learned reward model's weight in the combined score (with functions; "
                                       "not used in verifiable mode).")


@dataclass
class PolicyConfig:
    """Policy updates of a round: the algorithm (PPO, GRPO, online DPO), the KL anchor and its controls."""

    algo: str = setting("grpo", "A round algorithm of rlhf_core.registry.POLICY_ALGORITHMS (a plugin's too).",
                        choices=round_algorithms)
    lora_r: int = setting(16, "Rank of the policy (and value) LoRA adapter.")
    lora_alpha: int = setting(32, "LoRA alpha (scale alpha / r) of the policy adapter.")
    lora_dropout: float = setting(0.0, "Dropout of the policy adapter.")
    learning_rate: float = setting(5e-5, "PPO/GRPO learning rate.")
    kl_beta: float = setting(0.05, "β: weight of the KL penalty to the reference (PPO: per token in the reward; "
                                   "GRPO: k3 in the loss).")
    reference: str = setting(
        "base", "The KL anchor: \"base\" (adapters off), \"previous\" (the policy version the round starts from, "
                "frozen), \"sft\" (the newest SFT version: the seeds' objective, KL to the SFT policy), or a version "
                "number such as \"3\".")
    max_kl_per_token: float = setting(
        0.0, "Stop a round's updates once a rollout's KL to the reference exceeds this (nats/token; 0 = never): "
             "the exact KL over the vocabulary at the rollout's prefixes, averaged over its tokens. With "
             "reference = \"previous\" it bounds each round's step (a trust region per round); DPO checks it "
             "against the exact KL on held-out responses after each step.")
    kl_control: Literal["fixed", "adaptive"] = setting(
        "fixed", "PPO/GRPO: \"fixed\" keeps kl_beta; \"adaptive\" moves it towards target_kl (Ziegler et al. 2019), "
                 "each step by at most ±20% x samples per step / kl_horizon, and the next round starts from where it "
                 "ended.")
    target_kl: float = setting(0.05, "Nats/token (k3 estimate of the rollout's KL to the reference); above 0.")
    kl_horizon: int = setting(256, "Samples (adaptive KL control).")
    kl_budget: float = setting(
        0.08, "A KL budget over rounds (nats/token to the reference; 0 = none): round r may drift up to kl_budget * "
              "min(1, r / kl_budget_rounds) from the reference (the base; with reference = \"sft\" the SFT version, "
              "the total to the base shown beside it). That share is the round's stop (with max_kl_per_token, the "
              "smaller) and, with kl_control = \"adaptive\", its target. Not with reference = \"previous\". On by "
              "default: the loop's KL to the base stays within about 0.1 nats/token over its first rounds (docs, "
              "\"Is the loop improving?\").")
    kl_budget_rounds: int = setting(3, "Rounds over which kl_budget opens up (at least 1).")
    loss_type: Literal["grpo", "dr_grpo"] = setting(
        "grpo", "GRPO loss: \"grpo\" (per-response token mean, advantages / group std) or \"dr_grpo\" (Dr. GRPO: "
                "token sum over a constant length, no std scaling, so length and prompt difficulty do not reweight "
                "the gradient).")
    clip_eps: float = setting(0.2, "Clip range of the PPO/GRPO surrogate ratio.")
    value_clip: float = setting(0.2, "Clip range of PPO's value loss.")
    gamma: float = setting(1.0, "Discount of GAE (PPO).")
    lam: float = setting(0.95, "λ of GAE (PPO).")
    steps: int = setting(8, "Rollout/update iterations per round.")
    prompts_per_step: int = setting(8, "Prompts of one rollout.")
    group_size: int = setting(4, "GRPO samples per prompt (at least 2); also DPO's fresh samples per prompt for "
                                 "dpo_rm_pairs.")
    update_epochs: int = setting(2, "Passes over a rollout.")
    minibatch_size: int = setting(8, "Samples per minibatch of a rollout's update epochs (and per scoring pass).")
    max_new_tokens: int = setting(64, "Most tokens of a rollout's response.")
    min_new_tokens: int = setting(0, "Rollouts may not end their turn before this many tokens (0 = free); benchmarks "
                                     "force full length with it.")
    temperature: float = setting(1.0, "Sampling temperature of rollouts.")
    whiten_rewards: bool = setting(True, "PPO: z-score the scores across the rollout, so β is in units of the batch's "
                                         "score spread; Dr. GRPO: divide them by the rollout's std (TRL's "
                                         "scale_rewards=\"batch\").")
    seed: int = setting(0, "Random seed of policy training (sampling, minibatch order; a round adds its version id).")
    dpo_beta: float = setting(0.1, "DPO (algo = \"dpo\"): the implicit-reward scale β (above 0).")
    dpo_label_smoothing: float = setting(0.0, "Conservative DPO's assumed share of flipped labels (at least 0, below "
                                              "0.5).")
    dpo_learning_rate: float = setting(1e-4, "DPO learning rate (above 0).")
    dpo_epochs: int = setting(2, "Passes over the round's pairs.")
    dpo_batch_size: int = setting(8, "Pairs per optimizer step.")
    dpo_kl_every: int = setting(
        4, "Measure the exact KL on held-out responses every this many steps (and on the last): about a quarter of a "
           "step's time on a CPU (SmolLM2-135M), so the curve and the max_kl_per_token check are sampled.")
    dpo_past_rounds: int = setting(0, "Also train on judged pairs sampled up to this many rounds before the current "
                                      "policy (0: this round's only).")
    dpo_rm_pairs: int = setting(0, "Add this many best-vs-worst pairs of group_size fresh policy samples per prompt, "
                                   "ranked by the reward model.")


@dataclass
class SFTConfig:
    """Supervised fine-tuning of the `policy` adapter on demonstrations (`rlhf train-sft`, stage 1)."""

    learning_rate: float = setting(2e-4, "LoRA only, as the reward model's.")
    epochs: int = setting(3, "Passes over the demonstrations.")
    max_steps: int = setting(0, "Optimizer steps at most (0 = no cap).")
    batch_size: int = setting(8, "Demonstrations per optimizer step.")
    max_length: int = setting(512, "Prompt + answer tokens; a long prompt keeps its end, a long answer its start.")
    eval_fraction: float = setting(0.2, "Held-out share of prompts: their demonstrations measure the held-out NLL "
                                        "that picks the epoch kept.")
    early_stopping: bool = setting(True, "Keep the epoch (0 = the version it started from) with the lowest held-out "
                                         "NLL.")
    seed: int = setting(0, "Random seed of SFT.")


@dataclass
class PRMConfig:
    """The process reward model (`rlhf train-prm`): a LoRA adapter and a step head on the same base, trained on the
    step labels, scored at each step's end."""

    lora_r: int = setting(16, "Rank of the PRM's LoRA adapter.")
    lora_alpha: int = setting(32, "LoRA alpha (scale alpha / r) of the PRM's adapter.")
    learning_rate: float = setting(2e-4, "Learning rate of the PRM's adapter and step head (above 0).")
    epochs: int = setting(3, "Passes over the labeled responses.")
    batch_size: int = setting(8, "Labeled responses per optimizer step.")
    max_length: int = setting(512, "Prompt + response tokens at most; steps past it are not trained on.")
    eval_fraction: float = setting(0.2, "Held-out share of prompts: their step labels measure the PRM's step "
                                        "accuracy and pick the epoch kept (0 to below 1).")
    neutral: Literal["good", "bad"] = setting(
        "good", "What a step labeled neutral counts as when training and exporting (TRL's labels are true/false).")
    aggregate: Literal["min", "product"] = setting(
        "min", "A response's score from its step scores P(good): their minimum (the weakest step) or their product "
               "(every step right).")
    verify_threshold: float = setting(0.5, "As a verifier, the PRM passes a response whose score is at least this "
                                           "(0 to 1).")
    seed: int = setting(0, "Random seed of PRM training (held-out split, batches).")
