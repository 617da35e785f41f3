"""What the operator page shows: live status, annotation quality, and metrics across rounds.

Plain data out (dicts and row lists); `labeling_app` only renders them.
"""

from __future__ import annotations

import json
from typing import Any

from rlhf_core.algorithms.agreement import fleiss_kappa, majority_agreement, position_bias, tie_rate
from rlhf_core.data.annotator_quality import AGREEMENT_KINDS, annotator_quality_report, labels_by_pair
from rlhf_core.loop.evaluation import PREVIOUS_KIND, human_win_rates
from storage import (
    CHOICES,
    Database,
    Job,
    count_control_pairs,
    current_policy,
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


def job_attempt(job: Job) -> str:
    """A job's attempts: "1 of 3"; queued again after its worker died, the next one and when it may start ("2 of 3
    at 12:04:05 UTC")."""
    if job.status == "queued" and job.retry_at is not None:
        return f"{job.attempts + 1} of {job.max_attempts} at {job.retry_at:%H:%M:%S} UTC"
    return f"{job.attempts} of {job.max_attempts}"


def live_status(db: Database) -> dict[str, Any]:
    """Counts, judgments per annotator and per day (UTC, last 30 days), and the newest jobs."""
    info = status_counts(db)
    info["judgments_per_day"] = judgments_per_day(db, days=30)
    info["recent_jobs"] = [
        {"id": j.id, "kind": j.kind, "status": j.status, "progress": round(j.progress, 3), "attempt": job_attempt(j),
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


EVIDENCE_KEYS = ("claimed_gain", "rescored_gain", "rescored_predecessor_gain", "fresh", "overoptimization",
                 "promotion", "rollback")


def current_notes(rows: list[dict[str, Any]]) -> None:
    """Fill each row's `current_note`: why the current version is current (the newest; a successor not promoted;
    a rollback) and why a version is not current although it is newer."""
    newest = max(r["version"] for r in rows)
    for row in rows:
        promotion, rollback = row.get("promotion") or {}, row.get("rollback") or {}
        if row["current"]:
            demoted = [r for r in rows if (r.get("promotion") or {}).get("promoted") is False
                       and r.get("parent") == row["version"] and r["version"] > row["version"]]
            if rollback and (not demoted or rollback.get("at", "") >= demoted[-1].get("created", "")):
                row["current_note"] = f"current: rolled back to by {rollback.get('by', 'an operator')}"
            elif demoted:
                row["current_note"] = f"current: v{demoted[-1]['version']} was not promoted"
            else:
                row["current_note"] = "current: the newest version" if row["version"] == newest else "current"
        elif promotion.get("promoted") is False:
            row["current_note"] = f"not promoted: {promotion.get('reason')}"
        else:
            row["current_note"] = ""


def overoptimization_status(db: Database) -> dict[str, Any]:
    """`rlhf status --json`'s "overoptimization": whether the rule's alarm stands on the current version (and its
    reason), every version's alarm, and which version is current."""
    versions = list_policies(db)
    current = current_policy(db)
    alarms = {v.id: json.loads(v.metrics_json or "{}").get("overoptimization") for v in versions}
    alarms = {k: v for k, v in alarms.items() if v}
    return {"alarm": current.id in alarms, "version": current.id, "reason": alarms.get(current.id),
            "alarms": {str(k): v for k, v in alarms.items()}}


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
    """One row per policy version (version 0 = base) with the metrics the round recorded and the evidence on it:
    its proxy gain as claimed and as re-scored, the fresh accuracy of its reward model on its pairs, human win
    rates against the base and its predecessor (with 95% intervals), the over-optimization alarm, and whether it
    is the current version and why (`current_note`)."""
    win_rates, vs_previous = human_win_rates(db), human_win_rates(db, PREVIOUS_KIND)
    cut_off = cut_off_counts(db)
    rm_by_id = {rm.id: rm for rm in list_reward_models(db)}
    current = current_policy(db).id
    rows = []
    for version in list_policies(db):
        metrics = json.loads(version.metrics_json)
        row: dict[str, Any] = {"version": version.id, "round": version.round, "algorithm": version.algorithm,
                               "parent": version.parent_id, "created": version.created_at.strftime("%Y-%m-%d %H:%M")}
        for key in ROUND_METRICS:
            row[key] = metrics.get(key)
        for key in EVIDENCE_KEYS:
            row[key] = metrics.get(key)
        rm = rm_by_id.get(metrics.get("rm_version"))
        if rm is not None and row["rm_heldout_accuracy"] is None:
            row["rm_heldout_accuracy"] = rm.heldout_accuracy
        if version.id in win_rates:
            row["human_win_rate"] = win_rates[version.id]["win_rate"]
            row["win_rate_judgments"] = win_rates[version.id]["judgments"]
            row["human_win_interval"] = win_rates[version.id]["interval"]
        if version.id in vs_previous:
            row["win_rate_vs_previous"] = vs_previous[version.id]["win_rate"]
            row["win_vs_previous_judgments"] = vs_previous[version.id]["judgments"]
            row["win_vs_previous_interval"] = vs_previous[version.id]["interval"]
        kl = row.get("kl_base_per_token") if row.get("kl_base_per_token") is not None else row.get("kl_per_token")
        # Gao et al.'s x axis; a sampled k1 estimate of a tiny KL can come out just below 0.
        row["sqrt_kl"] = max(kl, 0.0) ** 0.5 if isinstance(kl, int | float) else (0.0 if version.id == 0 else None)
        row["current"] = version.id == current
        cut, known = cut_off.get(version.id, (0, 0))
        # Share of this version's sampled responses cut at max_new_tokens (None until any has a known end).
        row["cut_off_share"], row["cut_off_known"] = (cut / known if known else None), known
        rows.append(row)
    if rows:
        current_notes(rows)
    return rows
