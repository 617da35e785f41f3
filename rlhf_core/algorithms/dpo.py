"""Direct Preference Optimization (Rafailov et al. 2023) with label smoothing (conservative DPO).

Pure functions. B = preference pairs; log-probs are whole-response sums in nats; β is in nats⁻¹·reward
units: the implicit reward of a response is β·(log π(y|x) − log π_ref(y|x)).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def sequence_logprobs(token_logp: Tensor, mask: Tensor) -> Tensor:
    """Sum of the masked token log-probs of each row: [B, T], [B, T] -> [B] nats (values outside the mask,
    even NaN, never count)."""
    m = mask.to(torch.bool)
    return torch.where(m, token_logp, torch.zeros_like(token_logp)).sum(dim=1)


def dpo_loss(policy_chosen: Tensor, policy_rejected: Tensor, ref_chosen: Tensor, ref_rejected: Tensor,
             beta: float, label_smoothing: float = 0.0) -> tuple[Tensor, dict[str, Tensor]]:
    """Mean DPO loss over B pairs, −(1−ε)·log σ(β·h) − ε·log σ(−β·h) with
    h = (log π(y_w) − log π_ref(y_w)) − (log π(y_l) − log π_ref(y_l)).

    All four inputs are [B] sequence log-probs (nats). ε = `label_smoothing` is the share of labels
    assumed flipped (conservative DPO, Mitchell 2023): with ε > 0 the optimum is a finite margin, so
    noisy annotators cannot push the policy without bound. With π = π_ref the loss is log 2 for any ε.

    Returns (loss scalar, metrics) with detached metrics: chosen_reward and rejected_reward (mean
    implicit rewards β·(log π − log π_ref)), reward_margin (their mean difference) and
    reward_accuracy (share of pairs whose chosen implicit reward is strictly higher).
    """
    if beta <= 0:
        raise ValueError(f"dpo beta must be > 0, got {beta}")
    if not 0.0 <= label_smoothing < 0.5:
        raise ValueError(f"label_smoothing must be in [0, 0.5), got {label_smoothing}")
    chosen_ratio = policy_chosen - ref_chosen
    rejected_ratio = policy_rejected - ref_rejected
    logits = beta * (chosen_ratio - rejected_ratio)
    losses = -(1.0 - label_smoothing) * F.logsigmoid(logits) - label_smoothing * F.logsigmoid(-logits)
    with torch.no_grad():
        chosen_reward = beta * chosen_ratio.detach()
        rejected_reward = beta * rejected_ratio.detach()
        metrics = {
            "chosen_reward": chosen_reward.mean(),
            "rejected_reward": rejected_reward.mean(),
            "reward_margin": (chosen_reward - rejected_reward).mean(),
            "reward_accuracy": (chosen_reward > rejected_reward).float().mean(),
        }
    return losses.mean(), metrics
