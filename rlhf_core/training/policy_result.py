"""What a policy update returns and records: the per-step history and the round summary that is
stored with the policy version (the operator page's rounds table and charts read its keys)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

# Per-step metrics the round summary reports as the mean over the last quarter of the steps.
SUMMARY_KEYS = ("reward_mean", "reward_std", "kl_per_token", "kl_k3_per_token", "kl_per_sequence",
                "kl_base_per_token", "kl_base_k3_per_token", "entropy", "response_length", "reward_length_corr",
                "clip_fraction", "approx_kl", "value_loss", "explained_variance", "kl_k3", "samples_per_s")


@dataclass
class PolicyTrainResult:
    history: list[dict[str, Any]]  # one row per step: "step" plus metrics (None where undefined)
    summary: dict[str, Any]


def finite(value: float | None) -> float | None:
    """JSON has no NaN: an undefined metric (e.g. explained variance of constant returns) is stored as null."""
    return value if value is not None and math.isfinite(value) else None


def show(value: float | None, digits: int) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def summarize(history: list[dict[str, Any]], seconds: float, keys: tuple[str, ...] = SUMMARY_KEYS) -> dict[str, Any]:
    """Round summary: each of `keys` averaged over the last quarter of the steps (at least one), which
    describes the policy being shipped with less noise than the final step alone."""
    tail = history[-max(1, math.ceil(len(history) / 4)):]
    summary: dict[str, Any] = {}
    for key in keys:
        values = [row[key] for row in tail if row.get(key) is not None]
        if values:
            summary[key] = sum(values) / len(values)
    summary["reward_mean_first"] = history[0].get("reward_mean") if history else None
    summary["steps"] = len(history)
    summary["stopped_at_kl"] = float(any(row.get("kl_stop") for row in history))
    summary["samples"] = sum(row["samples"] for row in history)
    summary["seconds"] = seconds
    return summary
