"""The adaptive KL coefficient of Ziegler et al. 2019 ("Fine-Tuning Language Models from Human
Preferences", section 2.2): β moves towards the value that keeps the measured KL at a target.

Pure function; KL in nats (per token here, as the loop measures it), β dimensionless.
"""

from __future__ import annotations

import math

MAX_PROPORTIONAL_ERROR = 0.2  # Ziegler et al.: e_t = clip(KL / target − 1, −0.2, 0.2)


def adaptive_kl_beta(beta: float, kl: float, target: float, n_samples: int, horizon: int) -> float:
    """β_{t+1} = β_t · (1 + K_β · e_t · n / horizon) with e_t = clip(KL_t / target − 1, ±0.2) and K_β = 1.

    kl: the KL measured on this step's samples (same units as `target`); n_samples: how many samples
    that step had; horizon: samples over which β may change by about e^0.2. A KL above target raises
    β (pulls the policy back harder), a KL below lowers it. A NaN KL leaves β unchanged.
    """
    if target <= 0 or horizon < 1 or n_samples < 0:
        raise ValueError(f"target must be > 0, horizon >= 1 and n_samples >= 0; got {target}, {horizon}, {n_samples}")
    if math.isnan(kl):
        return beta
    error = min(max(kl / target - 1.0, -MAX_PROPORTIONAL_ERROR), MAX_PROPORTIONAL_ERROR)
    return beta * (1.0 + error * n_samples / horizon)
