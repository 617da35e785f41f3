"""Policy-update losses: PPO (policy and value), GRPO and Dr. GRPO, entropy and log-prob gathering.

Pure functions: tensors in, tensors out. B = sequences, T = response tokens, V = vocabulary.
Log-probabilities are in nats; advantages and returns are in reward units. Every loss is to be
minimized; the returned metrics are detached.
"""

from __future__ import annotations

import torch
from torch import Tensor

from rlhf_core.algorithms.kl import kl_k3
from rlhf_core.algorithms.masked import masked_mean, masked_var


def ppo_policy_loss(
    logp: Tensor, old_logp: Tensor, advantages: Tensor, mask: Tensor, clip_eps: float = 0.2
) -> tuple[Tensor, Tensor, Tensor]:
    """PPO clipped surrogate, CleanRL style.

    logp: [B, T] log-probs of the sampled tokens under the current policy (with grad);
    old_logp: [B, T] the same under the policy that sampled them; advantages, mask: [B, T].
    Returns (loss scalar, clip_fraction scalar in [0, 1], approx_kl scalar in nats), where
    approx_kl = mean((ratio − 1) − log ratio), the k3 estimate of KL(old‖new).
    """
    log_ratio = logp - old_logp
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip_eps, 1.0 + clip_eps)
    loss = masked_mean(torch.max(unclipped, clipped), mask)
    with torch.no_grad():
        clip_fraction = masked_mean(((ratio - 1.0).abs() > clip_eps).to(ratio.dtype), mask)
        approx_kl = masked_mean((ratio - 1.0) - log_ratio, mask)
    return loss, clip_fraction, approx_kl


def ppo_value_loss(
    values: Tensor, old_values: Tensor, returns: Tensor, mask: Tensor, clip_range: float = 0.2
) -> tuple[Tensor, Tensor]:
    """Clipped value loss 0.5 · mean(max((v − R)², (v_clip − R)²)), v_clip = v_old + clip(v − v_old, ±c).

    values: [B, T] current value-head outputs (with grad); old_values, returns, mask: [B, T].
    Returns (loss scalar in reward units², clip_fraction: share of tokens where the clipped term won).
    """
    clipped_values = old_values + torch.clamp(values - old_values, -clip_range, clip_range)
    err = (values - returns) ** 2
    err_clipped = (clipped_values - returns) ** 2
    loss = 0.5 * masked_mean(torch.max(err, err_clipped), mask)
    with torch.no_grad():
        clip_fraction = masked_mean((err_clipped > err).to(err.dtype), mask)
    return loss, clip_fraction


def explained_variance(values: Tensor, returns: Tensor, mask: Tensor) -> float:
    """1 − Var(R − V) / Var(R) over masked tokens: 1 is a perfect value head, ≤ 0 is useless.

    values, returns, mask: [B, T]. Returns NaN when the returns have zero variance.
    """
    with torch.no_grad():
        var_returns = masked_var(returns, mask, unbiased=False)
        if var_returns == 0:
            return float("nan")
        return float(1.0 - masked_var(returns - values, mask, unbiased=False) / var_returns)


GRPO_LOSS_TYPES = ("grpo", "dr_grpo")


def grpo_loss(
    logp: Tensor,
    old_logp: Tensor,
    ref_logp: Tensor,
    advantages: Tensor,
    mask: Tensor,
    clip_eps: float = 0.2,
    beta: float = 0.04,
    loss_type: str = "grpo",
    max_tokens: int | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """GRPO objective (DeepSeekMath): clipped surrogate with the sequence advantage on every token,
    plus β·k3 KL to the reference.

    loss_type "grpo" averages over each sequence's real tokens, then over sequences, so a token of a
    short response weighs more than one of a long response (a bias towards short correct and long
    wrong answers). "dr_grpo" (Dr. GRPO, Liu et al. 2025; TRL's loss_type of the same name) sums
    over all real tokens and divides by the constant B · max_tokens, so every token weighs the same.

    logp, old_logp, ref_logp, mask: [B, T]; advantages: [B]; max_tokens: the generation limit
    (required for "dr_grpo"). Returns (loss scalar, metrics) with metrics "clip_fraction" (share of
    real tokens with |ratio − 1| > eps) and "kl" (mean k3, nats).
    """
    if loss_type not in GRPO_LOSS_TYPES:
        raise ValueError(f"loss_type must be one of {', '.join(GRPO_LOSS_TYPES)}, got {loss_type!r}")
    ratio = torch.exp(logp - old_logp)
    adv = advantages.unsqueeze(1).to(logp.dtype)
    surrogate = torch.max(-adv * ratio, -adv * torch.clamp(ratio, 1.0 - clip_eps, 1.0 + clip_eps))
    kl = kl_k3(logp, ref_logp)
    per_token = surrogate + beta * kl
    if loss_type == "grpo":
        loss = masked_mean(per_token, mask, dim=1).mean()
    else:
        if not max_tokens or max_tokens < 1:
            raise ValueError("dr_grpo needs max_tokens, the generation limit it normalises by")
        m = mask.to(torch.bool)
        loss = torch.where(m, per_token, torch.zeros_like(per_token)).sum() / (logp.shape[0] * max_tokens)
    with torch.no_grad():
        metrics = {
            "clip_fraction": masked_mean(((ratio - 1.0).abs() > clip_eps).to(ratio.dtype), mask),
            "kl": masked_mean(kl, mask),
        }
    return loss, metrics


def entropy_from_logits(logits: Tensor) -> Tensor:
    """Entropy of softmax(logits) along the vocabulary: H = logsumexp(z) − Σ p·z.

    logits: [B, T, V] (finite). Returns [B, T] in nats.
    """
    probs = torch.softmax(logits, dim=-1)
    return torch.logsumexp(logits, dim=-1) - (probs * logits).sum(dim=-1)


def gather_logprobs(logits: Tensor, tokens: Tensor) -> Tensor:
    """log softmax(logits)[token] without materializing the full [B, T, V] log-softmax.

    logits: [B, T, V] already aligned with tokens (shift before calling); tokens: [B, T] int64.
    Returns [B, T] log-probs in nats, float32 for half-precision logits (ratios need the precision).
    """
    if logits.dtype in (torch.float32, torch.float64):
        picked = torch.gather(logits, -1, tokens.unsqueeze(-1)).squeeze(-1)
        return picked - torch.logsumexp(logits, dim=-1)
    # logsumexp in half precision loses too much; go row by row so only one row is upcast at a time.
    rows = [
        torch.gather(torch.log_softmax(row.float(), dim=-1), -1, row_tokens.unsqueeze(-1)).squeeze(-1)
        for row, row_tokens in zip(logits, tokens, strict=True)
    ]
    return torch.stack(rows)
