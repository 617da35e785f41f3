"""Which annotators to trust: each annotator's accuracy on control pairs and agreement with the
majority, and the current reward model's CrowdBT estimates of their reliability η and left-side bias
(the figures of `rlhf status --json` and the operator page), the annotators below
`reward.min_annotator_accuracy`, and a filter that leaves their judgments out of a training set.
Reward-model training, the export and the status views all ask here, so they agree.

Kept free of the model code (no torch import), so that `rlhf status` stays quick.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Collection, Sequence
from typing import Any

from rlhf_core.algorithms.agreement import (
    annotator_quality,
    below_accuracy,
    control_accuracy_counts,
    majority_agreement_counts,
)
from storage import Database, JudgmentRow, control_judgments, current_reward_model, judgment_rows

# Pairs whose judgments count for agreement with the majority; control pairs have their own figure.
AGREEMENT_KINDS = ("train", "eval_vs_base", "eval_vs_previous", "imported")


def control_counts(db: Database) -> dict[str, tuple[int, int]]:
    """Per username, (correct, judged) on control pairs; annotators with no control judgment are absent."""
    return control_accuracy_counts((j.annotator, j.choice, j.expected) for j in control_judgments(db))


def low_accuracy_annotators(db: Database, threshold: float) -> set[str]:
    """Usernames whose control-pair accuracy (correct / judged, the point estimate) is below
    `threshold` in [0, 1]. Annotators with no control judgment are kept (not in the set); a
    threshold of 0 (the default of `reward.min_annotator_accuracy`) returns an empty set."""
    if threshold <= 0.0:
        return set()
    return below_accuracy(control_counts(db), threshold)


def without_annotators(rows: Sequence[JudgmentRow], annotators: Collection[str]) -> list[JudgmentRow]:
    """`rows` minus the judgments of `annotators` (usernames), in their order. Pure: no database."""
    if not annotators:
        return list(rows)
    leave_out = set(annotators)
    return [row for row in rows if row.annotator not in leave_out]


def labels_by_pair(rows: Sequence[JudgmentRow]) -> dict[int, dict[str, str]]:
    """pair id -> {annotator: choice}, the items of the agreement statistics."""
    by_pair: dict[int, dict[str, str]] = defaultdict(dict)
    for row in rows:
        by_pair[row.pair_id][row.annotator] = row.choice
    return by_pair


def annotator_quality_report(db: Database, rows: Sequence[JudgmentRow] | None = None) -> dict[str, dict[str, Any]]:
    """`rlhf status --json`'s "annotator_quality": for each username with a judgment, accuracy on
    control pairs and agreement with the majority of the other raters of the same training and
    evaluation pairs, each with its count and 95% Wilson interval [lo, hi] (None where the count is 0).

    Each record also has the current reward model's CrowdBT estimates (`reward.annotator_model =
    "crowd_bt"`): eta, left_bias, follows_preference, eta_judgments (decisive and control judgments they
    rest on), training_weight (the mean weight of their judgments in that training) and eta_reward_model
    (the version); all None when that version has none for the annotator.

    rows: the judgments of AGREEMENT_KINDS pairs, when the caller has read them already.
    """
    if rows is None:
        rows = judgment_rows(db, kinds=AGREEMENT_KINDS)
    majority = majority_agreement_counts(labels_by_pair(rows))
    version, estimates = reliability_estimates(db)
    report = annotator_quality(control_counts(db), majority, {row.annotator for row in rows} | set(estimates))
    for name, figures in report.items():
        est = estimates.get(name)
        figures.update({key: None if est is None else est.get(key) for key in RELIABILITY_KEYS})
        figures["eta_judgments"] = None if est is None else est.get("judgments", 0) + est.get("control_judgments", 0)
        figures["eta_reward_model"] = None if est is None else version
    return report


RELIABILITY_KEYS = ("eta", "left_bias", "follows_preference", "training_weight")


def reliability_estimates(db: Database) -> tuple[int | None, dict[str, dict[str, Any]]]:
    """(id, annotator -> estimate) of the current reward-model version's CrowdBT estimates (`annotators` in
    its metrics); (id or None, {}) when it has none."""
    version = current_reward_model(db)
    if version is None:
        return None, {}
    stored = json.loads(version.metrics_json or "{}").get("annotators")
    return version.id, stored if isinstance(stored, dict) else {}
