"""Reward-modelling and RLHF tensor math: Bradley-Terry, the KL-regularized optimum, KL estimators,
masked statistics, GAE and per-token rewards.

Pure functions: tensors in, tensors out; no models, no IO. Shapes use B = batch (sequences),
T = response tokens, K = candidate responses. Rewards and log-probabilities are in nats.

The policy-update losses (PPO, GRPO, entropy, log-prob gathering) live in
`rlhf_core.policy_losses`; they are re-exported here so `from rlhf_core.losses import ppo_policy_loss`
also works.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

# Margin (in reward units) demanded by the Bradley-Terry loss for each annotator strength, as in
# Llama 2's margin loss: a "strong" preference should be separated by more than a "slight" one.
STRENGTH_MARGIN: dict[str | None, float] = {None: 0.0, "slight": 0.0, "clear": 0.5, "strong": 1.0}


# --------------------------------------------------------------------------- Bradley-Terry


def bt_probability(r_chosen: Tensor, r_rejected: Tensor) -> Tensor:
    """P(chosen ≻ rejected) = sigmoid(r_chosen − r_rejected); inputs [B] rewards, output [B] in (0, 1)."""
    return torch.sigmoid(r_chosen - r_rejected)


def bradley_terry_loss(r_chosen: Tensor, r_rejected: Tensor, margin: Tensor | None = None) -> Tensor:
    """Mean negative log-likelihood of the preferences, −log σ(r_c − r_r − margin).

    r_chosen, r_rejected: [B] scalar rewards; margin: [B] or None (zero). Returns a scalar in nats.
    """
    diff = r_chosen - r_rejected
    if margin is not None:
        diff = diff - margin.to(diff)
    return -F.logsigmoid(diff).mean()


def bt_accuracy(r_chosen: Tensor, r_rejected: Tensor) -> Tensor:
    """Fraction of pairs with r_chosen > r_rejected (ties count as wrong); [B], [B] -> scalar in [0, 1]."""
    return (r_chosen > r_rejected).float().mean()


def margins_from_strength(strengths: list[str | None]) -> Tensor:
    """Map annotator strengths ("slight" / "clear" / "strong" / None) to BT margins; returns float32 [B]."""
    unknown = sorted({repr(s) for s in strengths if s not in STRENGTH_MARGIN})
    if unknown:
        known = ", ".join(repr(k) for k in STRENGTH_MARGIN)
        raise ValueError(f"unknown preference strength {', '.join(unknown)}; expected one of {known}")
    return torch.tensor([STRENGTH_MARGIN[s] for s in strengths], dtype=torch.float32)


# --------------------------------------------------------------------------- KL-regularized optimum


def optimal_policy(ref_probs: Tensor, rewards: Tensor, beta: float) -> Tensor:
    """Closed-form optimum of E[r] − β·KL(π‖π_ref) over K responses: π* ∝ π_ref · exp(r / β).

    ref_probs, rewards: [..., K] (probabilities, reward units). Returns [..., K] probabilities.
    β = 0 gives the reward argmax (ties split in proportion to reference mass); β = inf gives π_ref.
    """
    if beta < 0 or math.isnan(beta):
        raise ValueError(f"beta must be >= 0, got {beta}")
    ref = ref_probs / ref_probs.sum(dim=-1, keepdim=True)
    if math.isinf(beta):
        return ref
    if beta == 0:
        best = rewards == rewards.max(dim=-1, keepdim=True).values
        weight = torch.where(best, ref, torch.zeros_like(ref))
        mass = weight.sum(dim=-1, keepdim=True)
        # If the reference puts no mass on any best response, split uniformly among them.
        weight = torch.where(mass > 0, weight, best.to(ref.dtype))
        return weight / weight.sum(dim=-1, keepdim=True)
    # Log space: exp(r / β) overflows for small β, softmax of (log π_ref + r / β) does not.
    return torch.softmax(torch.log(ref) + rewards / beta, dim=-1)


# --------------------------------------------------------------------------- KL estimators


def kl_k1(logp: Tensor, ref_logp: Tensor) -> Tensor:
    """k1 = log π(x) − log π_ref(x) for sampled tokens x ~ π: unbiased for KL(π‖ref), can be < 0.

    logp, ref_logp: [B, T] log-probs (nats) of the sampled tokens. Returns [B, T] nats.
    """
    return logp - ref_logp


def kl_k2(logp: Tensor, ref_logp: Tensor) -> Tensor:
    """k2 = ½ (log π − log π_ref)²: biased but low-variance and ≥ 0. [B, T] -> [B, T] nats."""
    return 0.5 * (logp - ref_logp) ** 2


def kl_k3(logp: Tensor, ref_logp: Tensor) -> Tensor:
    """k3 = exp(ρ) − ρ − 1 with ρ = log π_ref − log π (Schulman): unbiased and ≥ 0. [B, T] -> [B, T]."""
    log_ratio = ref_logp - logp
    # expm1 keeps precision when the two log-probs are close, which is the usual case.
    return torch.expm1(log_ratio) - log_ratio


# --------------------------------------------------------------------------- masked statistics


def masked_mean(x: Tensor, mask: Tensor, dim: int | None = None) -> Tensor:
    """Mean of x over positions where mask is nonzero (values outside the mask are ignored, even NaN).

    x, mask: same shape (e.g. [B, T]). dim=None gives a scalar, otherwise reduces along dim.
    An all-zero mask (along dim) gives 0.
    """
    m = mask.to(torch.bool)
    total = torch.where(m, x, torch.zeros_like(x))
    count = m.to(x.dtype)
    if dim is None:
        return total.sum() / count.sum().clamp(min=1)
    return total.sum(dim=dim) / count.sum(dim=dim).clamp(min=1)


def masked_var(x: Tensor, mask: Tensor, unbiased: bool = True) -> Tensor:
    """Variance of x over all masked positions; scalar. With unbiased=True divides by n − 1.

    Raises ValueError on an empty mask; a single masked value has variance 0.
    """
    n = mask.to(torch.bool).sum()
    if n == 0:
        raise ValueError("masked_var: the mask selects no positions")
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    if unbiased and n > 1:
        var = var * n / (n - 1)
    return var


def masked_whiten(x: Tensor, mask: Tensor, shift_mean: bool = True, eps: float = 1e-8) -> Tensor:
    """Normalize x to unit variance (and zero mean if shift_mean) using masked statistics only.

    x, mask: [B, T]. Returns [B, T]; positions outside the mask are 0.
    """
    mean = masked_mean(x, mask)
    var = masked_var(x, mask)
    whitened = (x - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        whitened = whitened + mean
    return torch.where(mask.to(torch.bool), whitened, torch.zeros_like(whitened))


# --------------------------------------------------------------------------- advantages and rewards


def compute_gae(
    rewards: Tensor, values: Tensor, mask: Tensor, gamma: float = 1.0, lam: float = 0.95
) -> tuple[Tensor, Tensor]:
    """Generalized Advantage Estimation over response tokens.

    rewards, values, mask: [B, T]; mask is 1 on response tokens and 0 on padding. The value after the
    last real token is 0 (episode ends). Returns (advantages, returns), both [B, T], detached, with
    returns = advantages + values and zeros at padded positions.
    """
    m = mask.to(torch.bool)
    rewards = torch.where(m, rewards.detach(), torch.zeros_like(rewards))
    values = torch.where(m, values.detach(), torch.zeros_like(values))
    mf = m.to(values.dtype)
    advantages = torch.zeros_like(values)
    next_value = torch.zeros_like(values[:, 0])
    next_adv = torch.zeros_like(values[:, 0])
    for t in reversed(range(values.shape[1])):
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        adv = (delta + gamma * lam * next_adv) * mf[:, t]
        advantages[:, t] = adv
        # A padded step passes nothing back: what precedes it sees a terminal state.
        next_value = values[:, t] * mf[:, t]
        next_adv = adv
    returns = (advantages + values) * mf
    return advantages, returns


def per_token_rewards(scores: Tensor, logp: Tensor, ref_logp: Tensor, mask: Tensor, beta: float) -> Tensor:
    """KL-shaped reward: −β·k1 on every real token plus the sequence score on the last real token.

    scores: [B] reward-model scores; logp, ref_logp, mask: [B, T]. Returns [B, T] (0 at padding).
    Rows with no real token get no score.
    """
    m = mask.to(torch.bool)
    rewards = torch.where(m, -beta * kl_k1(logp, ref_logp), torch.zeros_like(logp))
    positions = torch.arange(mask.shape[1], device=mask.device).expand_as(m)
    last = torch.where(m, positions, torch.full_like(positions, -1)).max(dim=1).values
    has_token = last >= 0
    rows = torch.arange(mask.shape[0], device=mask.device)
    bonus = torch.zeros_like(rewards)
    bonus[rows[has_token], last[has_token]] = scores[has_token].to(rewards.dtype)
    return rewards + bonus


def sequence_kl(logp: Tensor, ref_logp: Tensor, mask: Tensor) -> Tensor:
    """Per-sequence KL estimate: sum of k1 over real tokens. [B, T] inputs -> [B] nats."""
    m = mask.to(torch.bool)
    return torch.where(m, kl_k1(logp, ref_logp), torch.zeros_like(logp)).sum(dim=1)


# --------------------------------------------------------------------------- re-exports

_POLICY_LOSSES = (
    "ppo_policy_loss",
    "ppo_value_loss",
    "explained_variance",
    "grpo_advantages",
    "grpo_loss",
    "entropy_from_logits",
    "gather_logprobs",
)


def __getattr__(name: str) -> Any:
    # Lazy, so policy_losses can import the helpers above without a circular import.
    if name in _POLICY_LOSSES:
        from rlhf_core import policy_losses

        return getattr(policy_losses, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
