"""Preference math: Bradley-Terry probabilities and loss, strength margins, and the closed-form
optimum of the KL-regularized objective.

Pure functions: tensors in, tensors out; no models, no IO. B = pairs, K = candidate responses.
Rewards are in reward units; losses in nats.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

# Margin (in reward units) demanded by the Bradley-Terry loss for each annotator strength, as in
# Llama 2's margin loss: a "strong" preference should be separated by more than a "slight" one.
STRENGTH_MARGIN: dict[str | None, float] = {None: 0.0, "slight": 0.0, "clear": 0.5, "strong": 1.0}


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
