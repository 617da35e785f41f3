"""A toy policy algorithm registered from outside the package, as a plugin ($RLHF_PLUGINS=toy_algorithm) or with
`POLICY_ALGORITHMS.registered(TOY)`: its own module (this one) and one registry entry are all it takes.

"toy" is REINFORCE with a leave-one-out baseline (RLOO's advantage, r_i minus the mean of the group's others) taken
through GRPO's Dr. GRPO step, and charts how many groups had no signal."""

from __future__ import annotations

import os
from dataclasses import replace
from typing import Any

from torch import Tensor

from rlhf_core.registry import PLUGINS_ENV, POLICY_ALGORITHMS, Chart, PolicyAlgorithm
from rlhf_core.registry.algorithms import ROLLOUT_KEYS


def toy_update(stack: Any, rollout: Any, scores: Tensor, cfg: Any, optimizer: Any, **kwargs: Any  # noqa: ANN401
               ) -> dict[str, float]:
    from rlhf_core.training.grpo import grpo_update

    g = rollout.group_size
    grouped = scores.reshape(-1, g)
    leave_one_out = (grouped.sum(dim=1, keepdim=True) - grouped) / (g - 1)
    return grpo_update(stack, rollout, (grouped - leave_one_out).reshape(-1), replace(cfg, loss_type="dr_grpo"),
                       optimizer, **kwargs)


TOY = PolicyAlgorithm(
    name="toy", help="a test's toy: REINFORCE with a leave-one-out baseline",
    trainer="rlhf_core.training.policy:train_with_rollouts", update="toy_algorithm:toy_update",
    needs_reward_model=True, uses_rollouts=True, group_sampling=True,
    step_keys=(*ROLLOUT_KEYS, "zero_advantage_groups"),
    charts=(Chart("zero_advantage_groups", "toy: groups without signal", "groups", "~f"),))

if __name__ in os.environ.get(PLUGINS_ENV, "").split(","):  # imported as a plugin: register (tests register it
    POLICY_ALGORITHMS.add(TOY)  # for the length of a test with POLICY_ALGORITHMS.registered(TOY))
