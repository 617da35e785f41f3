"""The score a policy update optimizes: the learned reward model, the reward functions (`[[reward.functions]]`),
or both combined (`reward.combine`, `rlhf_core.algorithms.reward_combination`). PPO, GRPO and DPO's reward-ranked
pairs take it as their score function; each call leaves every component's mean in `last_metrics`
("rewards/<name>", the reward model's "rewards/reward_model"), which the training log stores per step (the
operator page's reward-component curves, TensorBoard's `policy/rewards/<name>`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from rlhf_core.algorithms.reward_combination import combine_rewards, component_means
from rlhf_core.config import RewardConfig
from rlhf_core.models.stack import ModelStack
from rlhf_core.registry import REWARD_MODEL_COMPONENT
from rlhf_core.rewards import RewardFunction, build_reward_functions, missing_columns, score_with_functions
from rlhf_core.training.rollout import Rollout, ScoreFn, reward_model_scores
from storage import Prompt, canonical_messages, prompt_columns, prompt_messages

COMPONENT_PREFIX = "rewards/"


def component_key(name: str) -> str:
    """The training-log key of a reward component: "rewards/<name>"."""
    return f"{COMPONENT_PREFIX}{name}"


class CombinedScore:
    """A score function (rollout -> [B]) made of the reward model (optional) and reward functions."""

    def __init__(self, functions: Sequence[RewardFunction], columns: dict[str, dict[str, Any]], combine: str,
                 model: ScoreFn | None = None, model_weight: float = 1.0) -> None:
        self.functions, self.columns, self.combine = list(functions), columns, combine
        self.model, self.model_weight = model, model_weight
        self.last_metrics: dict[str, float | None] = {}

    def components(self, rollout: Rollout) -> tuple[list[str], Tensor, Tensor]:
        """(names, [K, B] scores with NaN where a function does not apply, [K] weights)."""
        names, rows, weights = [], [], []
        if self.model is not None:
            names.append(REWARD_MODEL_COMPONENT)
            rows.append(self.model(rollout).detach().float().cpu())
            weights.append(self.model_weight)
        if self.functions:
            columns = [self.columns.get(canonical_messages(m), {}) for m in rollout.messages]
            scored = score_with_functions(self.functions, rollout.messages, rollout.texts, columns,
                                          completion_ids=rollout.response_ids)
            for function in self.functions:
                names.append(function.name)
                rows.append(torch.tensor([float("nan") if v is None else v for v in scored.values[function.name]]))
                weights.append(function.weight)
        return names, torch.stack(rows), torch.tensor(weights)

    def __call__(self, rollout: Rollout) -> Tensor:
        names, components, weights = self.components(rollout)
        self.last_metrics = {component_key(n): m for n, m in zip(names, component_means(components), strict=True)}
        return combine_rewards(components, weights, self.combine).to(rollout.batch.input_ids.device)


def policy_score_fn(stack: ModelStack, reward: RewardConfig, prompts: list[Prompt], *, use_model: bool
                    ) -> ScoreFn | None:
    """What a round's policy update scores with: the reward model alone when no function is configured (as
    before functions existed), the functions alone when `use_model` is False (verifiable mode), or both. None
    when there is neither. Raises ValueError naming the entry whose prompt column no train prompt has."""
    model = reward_model_scores(stack, reward.conservative, reward.conservative_lambda) if use_model else None
    functions = build_reward_functions(reward.functions)
    if not functions:
        return model
    columns = {canonical_messages(prompt_messages(p)): prompt_columns(p) for p in prompts}
    problem = missing_columns(functions, {name for named in columns.values() for name in named})
    if problem:
        raise ValueError(problem)
    return CombinedScore(functions, columns, reward.combine, model, reward.model_weight)
