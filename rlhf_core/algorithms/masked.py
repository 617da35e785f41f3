"""Statistics over the real (masked) positions of padded [B, T] tensors: mean, variance, whitening.

Pure functions; positions outside the mask never influence a result, even when they hold NaN.
"""

from __future__ import annotations

import torch
from torch import Tensor


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
