"""Combining reward components (the learned reward model and reward functions) into one score per response
(`reward.combine`), as TRL's GRPOTrainer combines its reward functions: a component that does not apply to a
response is NaN there and counts 0 in the weighted sum.

- "sum": Σ_k w_k · r_k.
- "normalize_then_sum": each component first z-scored over the responses it applies to in the batch (population
  std; a constant component becomes 0), so a weight means the same for a 0/1 check and a reward model in logits.
  Over the whole batch rather than per GRPO group, so PPO's single samples combine the same way.

Rewards (1, 2, 3) and (1, 0, n/a) with weights (1, 2): sum (3, 2, 3); normalize_then_sum (0.7753, -2, 1.2247).
"""

from __future__ import annotations

import torch
from torch import Tensor

COMBINE_MODES = ("sum", "normalize_then_sum")


def normalize_component(values: Tensor) -> Tensor:
    """[B] values z-scored over their finite entries (NaN stays NaN; a constant component becomes 0)."""
    known = ~torch.isnan(values)
    if not known.any():
        return values.clone()
    mean = values[known].mean()
    std = values[known].std(unbiased=False)
    out = values - mean
    return out / std if std > 0 else torch.where(known, torch.zeros_like(values), values)


def combine_rewards(components: Tensor, weights: Tensor, mode: str = "sum") -> Tensor:
    """components: [K, B] float (NaN: does not apply); weights: [K]; -> [B] combined scores (a response no
    component applies to scores 0)."""
    if mode not in COMBINE_MODES:
        raise ValueError(f"mode must be one of {COMBINE_MODES}, not {mode!r}")
    if components.dim() != 2 or weights.shape != (components.shape[0],):
        raise ValueError(f"components must be [K, B] and weights [K]; got {tuple(components.shape)} and "
                         f"{tuple(weights.shape)}")
    if mode == "normalize_then_sum":
        components = torch.stack([normalize_component(row) for row in components]) if len(components) else components
    weighted = components * weights.to(components.dtype).unsqueeze(1)
    return torch.nan_to_num(weighted, nan=0.0).sum(dim=0)


def component_means(components: Tensor) -> list[float | None]:
    """[K, B] -> each component's mean over the responses it applies to (None when it applies to none)."""
    means: list[float | None] = []
    for row in components:
        known = row[~torch.isnan(row)]
        means.append(float(known.mean()) if known.numel() else None)
    return means
