"""What the operator page shows: live status, annotation quality, and metrics across rounds.

Plain data out (dicts and row lists); `labeling_app` only renders them.
"""

from __future__ import annotations

import json
from typing import Any

from rlhf_core.algorithms.agreement import fleiss_kappa, majority_agreement, position_bias, tie_rate
from rlhf_core.data.annotator_quality import AGREEMENT_KINDS, annotator_quality_report, labels_by_pair
from rlhf_core.loop.evaluation import human_win_rates
from storage import (
    CHOICES,
    Database,
    count_control_pairs,
    current_reward_model,
    cut_off_counts,
    judgment_rows,
    judgments_per_day,
    list_jobs,
    list_policies,
    list_reward_models,
    status_counts,
)

ROUND_METRICS = ("rm_heldout_accuracy", "reward_mean", "kl_per_token", "kl_base_per_token", "kl_per_sequence",
                 "entropy", "response_length", "reward_length_corr", "clip_fraction", "value_loss", "human_win_rate",
                 "reward_seconds", "policy_seconds")


def live_status(db: Database) -> dict[str, Any]:
    """Counts, judgments per annotator and per day (UTC, last 30 days), and the newest jobs."""
    info = status_counts(db)
    info["judgments_per_day"] = judgments_per_day(db, days=30)
    info["recent_jobs"] = [
        {"id": j.id, "kind": j.kind, "status": j.status, "progress": round(j.progress, 3),
         "message": (j.error or j.message or "").splitlines()[0][:120] if (j.error or j.message) else "",
         "created": j.created_at.strftime("%Y-%m-%d %H:%M:%S")}
        for j in list_jobs(db, limit=10)
    ]
    return info


def annotation_quality(db: Database) -> dict[str, Any]:
    """Agreement and bias over all judgments of training and evaluation pairs, and per annotator
    (under "annotators") accuracy on control pairs and agreement with the majority, with intervals.

    Inter-annotator agreement is Fleiss' kappa (generalised to a varying number of raters) over
    the four labels, on pairs with at least two judgments.
    """
    rows = judgment_rows(db, kinds=AGREEMENT_KINDS)
    multi = {pid: labels for pid, labels in labels_by_pair(rows).items() if len(labels) >= 2}
    decisive = [r for r in rows if r.choice in ("a", "b")]
    left_picks = sum(1 for r in decisive if r.choice == r.left_side)
    return {
        "judgments": len(rows),
        "pairs_with_overlap": len(multi),
        "fleiss_kappa": fleiss_kappa([list(v.values()) for v in multi.values()], CHOICES),
        "position_bias_left_share": position_bias(left_picks, len(decisive)),
        "tie_rate": tie_rate([r.choice for r in rows]),
        "both_bad_rate": (sum(r.choice == "both_bad" for r in rows) / len(rows)) if rows else None,
        "agreement_with_majority": majority_agreement(multi),
        "annotators": annotator_quality_report(db, rows),
        "control_pairs": count_control_pairs(db),
    }


def policy_gate_note(db: Database) -> str | None:
    """A sentence when the newest round kept the policy because its reward model was not measurably better
    than chance (`rlhf_core.loop.rounds.policy_gate`); None otherwise."""
    rm = current_reward_model(db)
    gate = json.loads(rm.metrics_json or "{}").get("policy_gate") if rm is not None else None
    if not gate or gate.get("open", True):
        return None
    return (f"The last round did not update the policy: {gate['reason']}. The next pairs come from the current "
            "policy; the next round trains the reward model on more judgments.")


def rounds_table(db: Database) -> list[dict[str, Any]]:
    """One row per policy version (version 0 = base) with the metrics the round recorded."""
    win_rates = human_win_rates(db)
    cut_off = cut_off_counts(db)
    rm_by_id = {rm.id: rm for rm in list_reward_models(db)}
    rows = []
    for version in list_policies(db):
        metrics = json.loads(version.metrics_json)
        row: dict[str, Any] = {"version": version.id, "round": version.round, "algorithm": version.algorithm,
                               "created": version.created_at.strftime("%Y-%m-%d %H:%M")}
        for key in ROUND_METRICS:
            row[key] = metrics.get(key)
        rm = rm_by_id.get(metrics.get("rm_version"))
        if rm is not None and row["rm_heldout_accuracy"] is None:
            row["rm_heldout_accuracy"] = rm.heldout_accuracy
        if version.id in win_rates:
            row["human_win_rate"] = win_rates[version.id]["win_rate"]
            row["win_rate_judgments"] = win_rates[version.id]["judgments"]
        cut, known = cut_off.get(version.id, (0, 0))
        # Share of this version's sampled responses cut at max_new_tokens (None until any has a known end).
        row["cut_off_share"], row["cut_off_known"] = (cut / known if known else None), known
        rows.append(row)
    return rows
