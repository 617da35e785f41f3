"""Pearson correlation, used to watch for a length hack: does the reward simply follow response length?

Pure function on plain sequences of numbers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def pearson_correlation(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Pearson's r of paired values, in [−1, 1]; None with fewer than two pairs or when either side is
    constant (r is undefined then, and 0 would read as "no length bias")."""
    if len(x) != len(y):
        raise ValueError(f"pearson_correlation needs paired values; got {len(x)} and {len(y)}")
    n = len(x)
    if n < 2:
        return None
    mean_x, mean_y = sum(x) / n, sum(y) / n
    dx = [v - mean_x for v in x]
    dy = [v - mean_y for v in y]
    sxx, syy = sum(v * v for v in dx), sum(v * v for v in dy)
    if sxx == 0 or syy == 0:
        return None
    r = sum(a * b for a, b in zip(dx, dy)) / math.sqrt(sxx * syy)
    return max(-1.0, min(1.0, r))
