"""Crowd figures shared by bench/reward_learning.py and bench/loop_efficacy.py: the crowd-kit baseline
(aggregate the crowd's labels with crowd-kit's pairwise BradleyTerry or NoisyBradleyTerry, then train the
reward model on one aggregated label per pair), each annotator's estimated η beside its true kind, and
mean ± standard error over seeds."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from rlhf_core.simulator.crowd import kind_of
from rlhf_core.training.reward_data import PreferenceExample
from storage import JudgmentRow

CROWDKIT_METHODS = ("BradleyTerry", "NoisyBradleyTerry")


def _item(row: JudgmentRow, side: str) -> str:
    """A response as crowd-kit's item: its prompt and text (a pair's two responses are two items)."""
    return f"{row.prompt_id}\x1f{row.text_a if side == 'a' else row.text_b}"


def crowdkit_examples(rows: Sequence[JudgmentRow], method: str) -> tuple[list[PreferenceExample], dict[str, Any]]:
    """One example per judged pair, chosen by the item scores crowd-kit's `method` fits to the decisive
    judgments (left = the side shown on the left, so NoisyBradleyTerry's bias is a position bias); pairs whose
    items score equal are left out. Returns the examples and, for NoisyBradleyTerry, each worker's skill and
    bias."""
    import numpy as np
    import pandas as pd
    from crowdkit.aggregation import BradleyTerry, NoisyBradleyTerry

    decisive = [r for r in rows if r.choice in ("a", "b")]
    other = {"a": "b", "b": "a"}
    frame = pd.DataFrame({
        "worker": [r.annotator for r in decisive],
        "left": [_item(r, r.left_side) for r in decisive],
        "right": [_item(r, other[r.left_side]) for r in decisive],
        "label": [_item(r, r.choice) for r in decisive],
    })
    model = BradleyTerry(n_iter=100) if method == "BradleyTerry" else NoisyBradleyTerry(n_iter=100)
    with np.errstate(all="ignore"):  # NoisyBradleyTerry's gradient overflows exp() on the way; its fit is fine
        scores = model.fit_predict(frame).to_dict()
    examples, seen = [], set()
    for r in decisive:
        if r.pair_id in seen:
            continue
        seen.add(r.pair_id)
        s_a, s_b = scores.get(_item(r, "a"), 0.0), scores.get(_item(r, "b"), 0.0)
        if s_a == s_b:
            continue
        chosen, rejected = (r.text_a, r.text_b) if s_a > s_b else (r.text_b, r.text_a)
        examples.append(PreferenceExample(r.prompt_messages, chosen, rejected, None, r.prompt_id))
    workers = {}
    if method == "NoisyBradleyTerry":
        workers = {w: {"skill": round(float(model.skills_[w]), 4), "left_bias": round(float(model.biases_[w]), 4)}
                   for w in model.skills_.index}
    return examples, workers


def mean_se(values: Sequence[float]) -> tuple[float, float]:
    """Mean and its standard error (sample std / √n; 0 for one value)."""
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, 0.0
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1) / n)


def eta_rows(annotators: dict[str, dict[str, Any]]) -> list[str]:
    """One line per simulated annotator: name, true kind, estimated η, λ and share following the preference."""
    lines = []
    for name, est in sorted(annotators.items(), key=lambda kv: (kind_of(kv[0]) or "", kv[0])):
        lines.append(f"    {name:<20} {kind_of(name) or '?':<12} η {est['eta']:.3f}  left bias "
                     f"{est['left_bias']:.3f}  follows the preference {est['follows_preference']:.3f}  "
                     f"({est['judgments']} judgments)")
    return lines


def honest_above_the_rest(annotators: dict[str, dict[str, Any]], key: str = "follows_preference") -> bool | None:
    """Issue 29's target: `key` of every random/adversarial/left annotator below every honest one (None when
    the crowd has no honest annotator or none of those kinds)."""
    honest = [e[key] for n, e in annotators.items() if kind_of(n) == "honest"]
    bad = [e[key] for n, e in annotators.items() if kind_of(n) in ("random", "adversarial", "left")]
    if not honest or not bad:
        return None
    return max(bad) < min(honest)
