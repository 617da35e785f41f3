"""Each judge's figures, for `rlhf status --json` (key `judges`) and the operator page: its agreement with people
on the pairs both judged, as Cohen's kappa with a 95% interval (people's judgments made under a visible hint left
out, `labeling.show_suggestions`); its accuracy on control pairs (Wilson interval); its left bias (the share of its
raw answers, over both orders, that picked the response shown first: 0.5 is none); CrowdBT's estimates of its η
and left bias with the current reward model; and what it has spent. No model code: `rlhf status` stays quick."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from rlhf_core.algorithms.agreement import cohens_kappa_interval, wilson_interval
from rlhf_core.data.annotator_quality import AGREEMENT_KINDS, control_counts, reliability_estimates
from storage import Database, judgment_rows, list_judges


def _rounded(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(value, digits)


def judge_figures(db: Database) -> dict[str, dict[str, Any]]:
    """judge name -> kind, active, judgments, shared (people's judgments of pairs it judged), kappa and kappa_ci,
    control_judgments, control_accuracy and control_ci, left_bias, eta and crowd_left_bias (CrowdBT; None before a
    reward model has estimated them), requests, prompt_tokens and completion_tokens."""
    judges = list_judges(db)
    if not judges:
        return {}
    rows = judgment_rows(db, kinds=AGREEMENT_KINDS)
    people: dict[int, list[str]] = defaultdict(list)
    ai: dict[str, dict[int, str]] = defaultdict(dict)
    for row in rows:
        if row.annotator_kind == "ai":
            ai[row.annotator][row.pair_id] = row.choice
        elif not row.hint_shown:
            people[row.pair_id].append(row.choice)
    controls = control_counts(db)
    _, estimates = reliability_estimates(db)
    figures = {}
    for judge in judges:
        mine = ai.get(judge.name, {})
        pairs = [(choice, person) for pair, choice in mine.items() for person in people.get(pair, ())]
        kappa = cohens_kappa_interval([p[0] for p in pairs], [p[1] for p in pairs]) if pairs else None
        right, n = controls.get(judge.name, (0, 0))
        stats, est = judge.stats, estimates.get(judge.name) or {}
        decisive = int(stats.get("decisive_answers", 0))
        figures[judge.name] = {
            "kind": judge.kind, "active": judge.active, "judgments": len(mine) + n, "shared": len(pairs),
            "kappa": _rounded(kappa[0]) if kappa else None,
            "kappa_ci": [_rounded(kappa[1]), _rounded(kappa[2])] if kappa else None,
            "control_judgments": n, "control_accuracy": _rounded(right / n) if n else None,
            "control_ci": [_rounded(x) for x in wilson_interval(right, n)] if n else None,
            "left_bias": _rounded(stats.get("left_picks", 0) / decisive) if decisive else None,
            "eta": est.get("eta"), "crowd_left_bias": est.get("left_bias"),
            **{key: int(stats.get(key, 0)) for key in ("requests", "prompt_tokens", "completion_tokens")},
        }
    return figures
