"""Policy algorithms: how a policy version is made. One entry each; the configuration's `policy.algo`
check, the CLI's `--algo` choices and help, the worker (through `training.policy`), the operator page's
round picker and per-step charts, and the docs reference read this table.

Adding an algorithm means its module (a trainer, or for an algorithm that rolls out, scores and updates
like PPO, just its `update` function) and one entry here. An entry names its code by reference
("package.module:function"), so reading the table imports no model code.

- `trainer(update: training.policy.PolicyUpdate) -> PolicyTrainResult` trains the stack's `policy`
  adapter for one round; rollout algorithms share `training.policy:train_with_rollouts`, which calls the
  entry's `update(stack, rollout, scores, cfg, optimizer, *, logprobs, max_grad_norm, dp, generator,
  values=None) -> metrics`.
  An algorithm outside rounds (`in_rounds=False`, SFT) names the service that makes a version of it instead
  (`training.sft:run_sft_training`, run by its own job kind).
- `charts` are the per-step curves of its training jobs (the `phase` rows of the training log).
"""

from __future__ import annotations

from dataclasses import dataclass

from rlhf_core.registry.base import Registry


@dataclass(frozen=True)
class Chart:
    """One per-step curve: the training-log key, the chart's title, its y axis title and d3 format."""

    key: str
    title: str
    y_title: str
    y_format: str | None = None


@dataclass(frozen=True)
class PolicyAlgorithm:
    name: str
    help: str  # one line, for the CLI's help and the docs
    trainer: str  # "module:function": trains one round (see the module docstring)
    needs_reward_model: bool  # scores its own samples with the reward model
    uses_rollouts: bool  # samples from the policy while training (rollout -> score -> update)
    adapters: tuple[str, ...] = ("policy",)  # the LoRA adapters it trains ("value": PPO's critic)
    update: str | None = None  # rollout algorithms: "module:function", the update of one rollout
    group_sampling: bool = False  # rollout algorithms: policy.group_size samples per prompt (else one)
    reward_model_with: str = ""  # a setting that, when above 0, makes it score with the reward model too
    in_rounds: bool = True  # a choice of policy.algo, `--algo` and the page's round picker (SFT is not)
    phase: str = "policy"  # the training-log phase its steps are stored under
    step_keys: tuple[str, ...] = ()  # what each step row logs besides "step" (docs; charts come from these)
    charts: tuple[Chart, ...] = ()

    @property
    def label(self) -> str:
        """How the operator page names it."""
        return self.name.upper()


ROLLOUT_KEYS = ("reward_mean", "reward_std", "kl_per_token", "kl_k3_per_token", "kl_exact_per_token",
                "kl_per_sequence", "kl_base_per_token", "entropy", "response_length", "reward_length_corr",
                "clip_fraction", "approx_kl", "samples", "seconds", "samples_per_s", "kl_stop", "kl_beta")
ROLLOUT_CHARTS = (Chart("reward_mean", "policy: mean reward", "reward"),
                  Chart("kl_per_token", "policy: KL per token", "nats / token"),
                  Chart("response_length", "policy: response length", "tokens", "~f"))

POLICY_ALGORITHMS: Registry[PolicyAlgorithm] = Registry("policy algorithm", [
    PolicyAlgorithm(
        name="ppo", help="PPO against the reward model, with a LoRA critic (value adapter and head)",
        trainer="rlhf_core.training.policy:train_with_rollouts", update="rlhf_core.training.ppo:ppo_update",
        needs_reward_model=True, uses_rollouts=True, adapters=("policy", "value"),
        step_keys=(*ROLLOUT_KEYS, "value_loss", "explained_variance"), charts=ROLLOUT_CHARTS),
    PolicyAlgorithm(
        name="grpo", help="GRPO against the reward model: policy.group_size samples per prompt, no critic",
        trainer="rlhf_core.training.policy:train_with_rollouts", update="rlhf_core.training.grpo:grpo_update",
        needs_reward_model=True, uses_rollouts=True, group_sampling=True, step_keys=ROLLOUT_KEYS,
        charts=ROLLOUT_CHARTS),
    PolicyAlgorithm(
        name="dpo", help="online iterative DPO on the judged pairs sampled from the current version",
        trainer="rlhf_core.training.dpo:train_round", needs_reward_model=False, uses_rollouts=False,
        reward_model_with="policy.dpo_rm_pairs",
        step_keys=("dpo_loss", "reward_margin", "reward_accuracy", "chosen_reward", "rejected_reward", "logp_chosen",
                   "logp_rejected", "heldout_kl_per_token", "heldout_kl_base_per_token", "pairs", "samples",
                   "seconds", "kl_stop"),
        charts=(Chart("dpo_loss", "DPO: loss", "DPO loss"),
                Chart("reward_margin", "DPO: implicit reward margin", "β·log-ratio margin"),
                Chart("reward_accuracy", "DPO: implicit reward accuracy", "accuracy", ".0%"),
                Chart("heldout_kl_per_token", "DPO: held-out KL per token", "nats / token"))),
    PolicyAlgorithm(
        name="sft", help="supervised fine-tuning on the demonstrations (stage 1; `rlhf train-sft`)",
        trainer="rlhf_core.training.sft:run_sft_training", needs_reward_model=False, uses_rollouts=False,
        in_rounds=False, phase="sft", step_keys=("train_nll", "heldout_nll", "epoch", "seconds"),
        charts=(Chart("train_nll", "SFT: NLL per answer token", "nats / token"),
                Chart("heldout_nll", "SFT: held-out NLL per answer token (each epoch)", "nats / token"))),
])


def round_algorithms() -> tuple[str, ...]:
    """The algorithms a round can update the policy with (policy.algo, `--algo`, the round picker)."""
    return POLICY_ALGORITHMS.names(lambda a: a.in_rounds)


def round_algorithm(name: str) -> PolicyAlgorithm:
    """The entry of a round algorithm; UnknownKind listing them otherwise."""
    return POLICY_ALGORITHMS.require(name, lambda a: a.in_rounds)


def rollout_algorithm(name: str) -> PolicyAlgorithm:
    """The entry of an algorithm that trains on rollouts (rollout -> score -> update: `training.policy.train_policy`);
    UnknownKind listing them otherwise."""
    return POLICY_ALGORITHMS.require(name, lambda a: a.uses_rollouts and a.update is not None,
                                     what="policy algorithm for rollouts")
