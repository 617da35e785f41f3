"""GRPO update of the `policy` adapter (DeepSeekMath): no critic, group-relative advantages.

Each prompt gets `cfg.group_size` samples; a response's advantage is its score standardized within
its group (population std) and applies to every one of its tokens. The loss is the clipped
surrogate plus β·k3 KL to the reference (k3 is unbiased and never negative, so the penalty can't
be gamed by tokens with negative k1). `cfg.loss_type = "dr_grpo"` is Dr. GRPO: advantages only
centred within the group and tokens summed over a constant length, so neither response length nor
prompt difficulty reweights the gradient. The math lives in `rlhf_core.algorithms`.
"""

from __future__ import annotations

from collections import defaultdict

import torch
from torch import Tensor

from rlhf_core.algorithms.advantages import grpo_advantages
from rlhf_core.algorithms.kl import kl_k3
from rlhf_core.algorithms.masked import masked_mean
from rlhf_core.algorithms.policy_losses import grpo_loss
from rlhf_core.config import PolicyConfig
from rlhf_core.models.stack import ModelStack
from rlhf_core.training.distributed import DataParallel
from rlhf_core.training.ppo import clipped_step
from rlhf_core.training.rollout import (
    Rollout,
    RolloutLogprobs,
    cut,
    minibatch_rows,
    minibatches,
    rollout_logprobs,
    rollout_metrics,
)


def grpo_update(stack: ModelStack, rollout: Rollout, scores: Tensor, cfg: PolicyConfig,
                optimizer: torch.optim.Optimizer, *, logprobs: RolloutLogprobs | None = None,
                max_grad_norm: float = 1.0, dp: DataParallel | None = None,
                generator: torch.Generator | None = None) -> dict[str, float]:
    """`cfg.update_epochs` passes of GRPO minibatch steps on one rollout of `rollout.group_size`
    samples per prompt.

    scores: [B] sequence scores (reward units; only their order and spread within a group matter).
    `optimizer` covers the `policy` adapter. With `dp`, every process holds the whole (gathered)
    rollout, trains on its share of each minibatch (drawn from `generator`, seeded alike everywhere)
    and the gradients are summed: the update one process would make. Returns the rollout's metrics
    plus the update's means over minibatches: loss, clip_fraction, kl_k3 (nats/token, the penalized
    estimate), approx_kl (k3 of old‖new, nats/token) and the gradient norm; zero_advantage_groups
    counts groups whose samples all scored the same (they teach nothing but the KL term).
    """
    dp = dp or DataParallel(single=True)
    lp = logprobs if logprobs is not None else rollout_logprobs(stack, rollout, cfg.minibatch_size)
    device = rollout.batch.input_ids.device
    scores = scores.detach().float().to(device)
    dr_grpo = cfg.loss_type == "dr_grpo"
    # Dr. GRPO drops the per-group std; a reward model's scale is arbitrary (and changes every round), so
    # with whiten_rewards the scores are divided by the rollout's std instead (TRL's scale_rewards="batch"),
    # which keeps the step size stable without reweighting prompts by how much their samples differ.
    unit = scores.std(unbiased=False) if dr_grpo and cfg.whiten_rewards and scores.numel() > 1 else None
    advantages = grpo_advantages(scores / (unit + 1e-6) if unit is not None else scores, rollout.group_size,
                                 scale_by_std=not dr_grpo)
    mask = rollout.batch.response_mask

    stats: dict[str, list[float]] = defaultdict(list)
    was_training = stack.model.training
    stack.model.train()
    try:
        for index in minibatches(rollout.size, cfg.minibatch_size, cfg.update_epochs, generator):
            mine = index[dp.rank::dp.world]  # this process's share of the minibatch
            # Both loss types are means over the minibatch's sequences; the metrics are over its tokens.
            share = len(mine) / len(index)
            token_share = float(mask[mine].sum() / mask[index].sum().clamp(min=1))
            loss_value, token_parts = 0.0, dict.fromkeys(("clip_fraction", "kl_k3", "approx_kl"), 0.0)
            if len(mine):
                ids, attn, m = minibatch_rows(rollout.batch, mine)
                w = m.shape[1]
                old = cut(lp.old_logp, mine, w)
                # Forward and backward under one adapter context (ModelStack's checkpointing would also
                # recompute through the forward's adapter if backward ran outside it).
                with stack.use("policy"):
                    logp, _ = stack.token_logprobs(ids, attn, response_mask=m)
                    loss, parts = grpo_loss(logp, old, cut(lp.ref_logp, mine, w), advantages[mine.to(device)], m,
                                            cfg.clip_eps, cfg.kl_beta, loss_type=cfg.loss_type,
                                            max_tokens=cfg.max_new_tokens)
                    (loss * share).backward()
                loss_value = loss.item()
                # k3 with the roles swapped is (ratio − 1) − log ratio: the same approx KL PPO reports.
                token_parts = {"clip_fraction": float(parts["clip_fraction"]), "kl_k3": float(parts["kl"]),
                               "approx_kl": float(masked_mean(kl_k3(old, logp.detach()), m))}
            for key, value in clipped_step(optimizer, max_grad_norm, dp).items():
                stats[key].append(value)
            shared = dp.sums({"loss": loss_value * share, **{k: v * token_share for k, v in token_parts.items()}})
            for key, value in shared.items():
                stats[key].append(value)
    finally:
        stack.model.train(was_training)

    metrics = rollout_metrics(rollout, lp, scores)
    metrics.update({key: sum(v) / len(v) for key, v in stats.items()})
    grouped = scores.reshape(-1, rollout.group_size)
    metrics["zero_advantage_groups"] = float((grouped.max(dim=1).values == grouped.min(dim=1).values).sum())
    return metrics
