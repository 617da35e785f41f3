"""PPO update of the `policy` adapter with a critic on the `value` adapter + head.

Rewards follow InstructGPT: every response token is charged −β·k1 (log π − log π_ref of the
sampled token, the unbiased single-sample KL estimate), and the last response token also gets the
sequence score. With `whiten_rewards` the scores are z-scored across the rollout first, so β is
in units of the batch's score spread whatever scale the reward model happens to have. Advantages
come from GAE(γ, λ) and are whitened per rollout; the math lives in
`rlhf_core.algorithms` (`advantages`, `policy_losses`).
"""

from __future__ import annotations

from collections import defaultdict

import torch
from torch import Tensor

from rlhf_core.algorithms.advantages import compute_gae, per_token_rewards
from rlhf_core.algorithms.masked import masked_whiten
from rlhf_core.algorithms.policy_losses import explained_variance, ppo_policy_loss, ppo_value_loss
from rlhf_core.config import PolicyConfig
from rlhf_core.models.stack import ModelStack
from rlhf_core.training.distributed import DataParallel
from rlhf_core.training.rollout import (
    Rollout,
    RolloutLogprobs,
    cut,
    eval_mode,
    minibatch_rows,
    minibatches,
    rollout_logprobs,
    rollout_metrics,
)


def fresh_critic(stack: ModelStack) -> None:
    """Start the critic over: identity `value` adapter and a zero value head, so V ≡ 0 at first.

    A randomly initialised head predicts noise as large as the whitened returns, and advantages
    R − V start out noisier than the plain returns; from zero they start as the returns and the
    critic only ever removes variance it has learned to explain.
    """
    stack.reset_adapter("value")
    head = stack.heads["value"]
    with torch.no_grad():
        head.weight.zero_()
        head.bias.zero_()


def make_optimizer(stack: ModelStack, adapters: tuple[str, ...], cfg: PolicyConfig) -> torch.optim.Optimizer:
    """AdamW with one parameter group per adapter (its LoRA weights and head), made trainable.

    Groups are clipped separately in `clipped_step`, so the critic's large early gradients never
    shrink the policy's step.
    """
    groups = [{"params": stack.trainable_parameters(name), "name": name} for name in adapters]
    return torch.optim.AdamW(groups, lr=cfg.learning_rate, weight_decay=0.0)


def clipped_step(optimizer: torch.optim.Optimizer, max_grad_norm: float, dp: DataParallel | None = None
                 ) -> dict[str, float]:
    """Sum the gradients over the data-parallel processes (with `dp`), clip each parameter group's
    gradient norm to `max_grad_norm`, step, and return the pre-clip norms."""
    if dp is not None and dp.enabled:
        dp.sum_gradients([p for group in optimizer.param_groups for p in group["params"]])
    norms = {}
    for group in optimizer.param_groups:
        params = [p for p in group["params"] if p.grad is not None]
        norm = torch.nn.utils.clip_grad_norm_(params, max_grad_norm) if params else torch.tensor(0.0)
        norms[f"grad_norm_{group.get('name', 'params')}"] = float(norm)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return norms


@torch.no_grad()
def rollout_values(stack: ModelStack, rollout: Rollout, chunk_size: int = 8) -> Tensor:
    """Critic values of every prefix, aligned with the log-probs: [B, T-1] (eval mode, no grad)."""
    b = rollout.batch
    with eval_mode(stack.model):
        return torch.cat([stack.values(b.input_ids[i], b.attention_mask[i])
                          for i in torch.arange(rollout.size).split(max(1, chunk_size))])


def ppo_advantages(scores: Tensor, lp: RolloutLogprobs, values: Tensor, mask: Tensor, cfg: PolicyConfig
                   ) -> tuple[Tensor, Tensor, Tensor]:
    """KL-shaped per-token rewards -> GAE. scores [B]; the rest [B, T-1].

    Returns (whitened advantages, returns, per-token rewards), all [B, T-1] and detached.
    """
    scores = scores.detach().float().to(mask.device)
    if cfg.whiten_rewards:
        scores = masked_whiten(scores, torch.ones_like(scores))
    rewards = per_token_rewards(scores, lp.old_logp, lp.ref_logp, mask, cfg.kl_beta)
    advantages, returns = compute_gae(rewards, values, mask, cfg.gamma, cfg.lam)
    return masked_whiten(advantages, mask), returns, rewards


def ppo_update(stack: ModelStack, rollout: Rollout, scores: Tensor, cfg: PolicyConfig,
               optimizer: torch.optim.Optimizer, *, logprobs: RolloutLogprobs | None = None,
               values: Tensor | None = None, max_grad_norm: float = 1.0, dp: DataParallel | None = None,
               generator: torch.Generator | None = None) -> dict[str, float]:
    """`cfg.update_epochs` passes of clipped-PPO minibatch steps on one rollout.

    scores: [B] sequence scores of the rollout's responses (reward units). `optimizer` covers the
    `policy` and `value` adapters (see `make_optimizer`); `logprobs` and the critic's `values`
    ([B, T-1]) default to fresh passes. With `dp`, every process holds the whole (gathered) rollout,
    trains on its share of each minibatch (drawn from `generator`, seeded alike everywhere) and the
    gradients are summed: the update one process would make. Returns the rollout's metrics plus the
    update's means over minibatches: policy_loss, value_loss, clip_fraction, value_clip_fraction,
    approx_kl (nats/token), grad norms, and explained_variance of the critic on this rollout.
    """
    dp = dp or DataParallel(single=True)
    lp = logprobs if logprobs is not None else rollout_logprobs(stack, rollout, cfg.minibatch_size)
    mask = rollout.batch.response_mask
    old_values = values if values is not None else rollout_values(stack, rollout, cfg.minibatch_size)
    advantages, returns, rewards = ppo_advantages(scores, lp, old_values, mask, cfg)

    stats: dict[str, list[float]] = defaultdict(list)
    was_training = stack.model.training
    stack.model.train()
    try:
        for index in minibatches(rollout.size, cfg.minibatch_size, cfg.update_epochs, generator):
            mine = index[dp.rank::dp.world]  # this process's share of the minibatch
            # Both losses are means over the minibatch's tokens: a share weighs by its tokens.
            share = float(mask[mine].sum() / mask[index].sum().clamp(min=1))
            parts = dict.fromkeys(("policy_loss", "value_loss", "clip_fraction", "value_clip_fraction",
                                   "approx_kl"), 0.0)
            if len(mine):
                ids, attn, m = minibatch_rows(rollout.batch, mine)
                w = m.shape[1]
                # Forward and backward under one adapter context (ModelStack's checkpointing would also
                # recompute through the forward's adapter if backward ran outside it).
                with stack.use("policy"):
                    logp, _ = stack.token_logprobs(ids, attn, response_mask=m)
                    policy_loss, clip_fraction, approx_kl = ppo_policy_loss(
                        logp, cut(lp.old_logp, mine, w), cut(advantages, mine, w), m, cfg.clip_eps)
                    (policy_loss * share).backward()
                with stack.use("value"):
                    new_values = stack.values(ids, attn)
                    value_loss, value_clip_fraction = ppo_value_loss(
                        new_values, cut(old_values, mine, w), cut(returns, mine, w), m, cfg.value_clip)
                    (value_loss * share).backward()
                parts = {"policy_loss": policy_loss.item(), "value_loss": value_loss.item(),
                         "clip_fraction": float(clip_fraction), "value_clip_fraction": float(value_clip_fraction),
                         "approx_kl": float(approx_kl)}
            for key, value in clipped_step(optimizer, max_grad_norm, dp).items():
                stats[key].append(value)
            for key, value in dp.sums({key: value * share for key, value in parts.items()}).items():
                stats[key].append(value)
    finally:
        stack.model.train(was_training)

    metrics = rollout_metrics(rollout, lp, scores)
    metrics.update({key: sum(v) / len(v) for key, v in stats.items()})
    metrics["explained_variance"] = explained_variance(old_values, returns, mask)
    metrics["shaped_reward_sum"] = float((rewards * mask).sum(dim=1).mean())
    return metrics
