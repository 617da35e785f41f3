"""KL estimators between the policy and the reference from sampled tokens (Schulman's k1, k2, k3), and
the exact KL of two next-token distributions from their logits.

Pure functions: [B, T] log-probs of the sampled tokens (or [..., V] logits) in, nats out.
"""

from __future__ import annotations

import torch
from torch import Tensor


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


def sequence_kl(logp: Tensor, ref_logp: Tensor, mask: Tensor) -> Tensor:
    """Per-sequence KL estimate: sum of k1 over real tokens. [B, T] inputs -> [B] nats."""
    m = mask.to(torch.bool)
    return torch.where(m, kl_k1(logp, ref_logp), torch.zeros_like(logp)).sum(dim=1)


def kl_from_logits(logits: Tensor, ref_logits: Tensor) -> Tensor:
    """Exact KL(π‖π_ref) = Σ_v π(v)·(log π(v) − log π_ref(v)) of the next-token distributions.

    logits, ref_logits: [..., V] (unnormalised). Returns [...] nats, never negative. No sampling noise:
    the drift of a policy at fixed contexts (e.g. held-out responses) without generating anything.
    """
    logp = torch.log_softmax(logits.float(), dim=-1)
    ref_logp = torch.log_softmax(ref_logits.float(), dim=-1)
    return (logp.exp() * (logp - ref_logp)).sum(dim=-1).clamp(min=0.0)
