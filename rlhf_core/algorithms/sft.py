"""The supervised fine-tuning loss: negative log-likelihood of the answer tokens only.

Pure functions. Token log-probs are nats; masks mark the answer (response) tokens, so prompt tokens
contribute nothing. The loss is the mean over every answer token of the batch (not a mean of per-sequence
means), as TRL's SFTTrainer computes it: then a batch's loss does not depend on how its sequences are laid
out in rows, so packing several sequences into one row gives the loss of the same sequences side by side,
and every answer token weighs the same whatever the length of the answer it belongs to.
"""

from __future__ import annotations

import torch
from torch import Tensor


def masked_nll_sum(token_logp: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """(−Σ log p over the masked tokens, number of masked tokens): [..., T] tensors -> two scalars.

    Values outside the mask never count, even NaN; the count is a float tensor (0 for an empty mask)."""
    m = mask.to(torch.bool)
    total = -torch.where(m, token_logp, torch.zeros_like(token_logp)).sum()
    return total, m.sum().to(token_logp.dtype)


def sft_loss(token_logp: Tensor, mask: Tensor) -> Tensor:
    """Mean negative log-likelihood per answer token: −Σ_masked log p / #masked (nats/token; 0 when the
    mask is empty). token_logp, mask: [B, T] (e.g. `ModelStack.token_logprobs` and its response mask)."""
    total, count = masked_nll_sum(token_logp, mask)
    return total / count.clamp(min=1)


def perplexity(nll_per_token: float) -> float:
    """exp(NLL per token): the effective number of equally likely choices per answer token."""
    return float(torch.tensor(nll_per_token, dtype=torch.float64).exp())
