"""The operator console's view of the reward functions: what is configured (`[[reward.functions]]`, loop.mode,
reward.combine) and each reward component's curve: its mean per policy step of the newest training job that logged
components (`rewards/<name>` in the training log, written by `training.reward_scores`), and per policy version."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from rlhf_core.registry import training_kinds
from rlhf_core.workspace import Workspace
from storage import Database, list_jobs, list_policies, training_logs

PREFIX = "rewards/"
JOBS_SEARCHED = 50


@dataclass
class RewardComponents:
    """Configured functions (rows), the newest job's per-step component means and the per-version ones."""

    functions: list[list[Any]]
    mode: str
    combine: str
    job_id: int | None = None
    steps: list[dict[str, Any]] = field(default_factory=list)  # {"step", "component", "mean"}
    versions: list[dict[str, Any]] = field(default_factory=list)  # {"version", "component", "mean"}


def configured_functions(ws: Workspace) -> list[list[Any]]:
    """[name, what (kind or module:function), weight, prompt column] per configured function."""
    return [[f.label, f.kind or f.function, f.weight, f.column or ""] for f in ws.config.reward.functions]


def _components(row: dict[str, Any]) -> dict[str, float]:
    return {k[len(PREFIX):]: float(v) for k, v in row.items()
            if k.startswith(PREFIX) and isinstance(v, int | float) and not isinstance(v, bool)}


def reward_components(ws: Workspace, db: Database) -> RewardComponents:
    """Everything the console's reward-functions panel shows (numbers only; the page renders them)."""
    found = RewardComponents(configured_functions(ws), ws.config.loop.mode, ws.config.reward.combine)
    kinds = training_kinds()
    for job in list_jobs(db, limit=JOBS_SEARCHED):
        if job.kind not in kinds:
            continue
        rows = [r for r in training_logs(db, phase="policy", job_id=job.id) if _components(r)]
        if rows:
            found.job_id = job.id
            found.steps = [{"step": int(r["step"]) + 1, "component": name, "mean": value}
                           for r in rows for name, value in _components(r).items()]
            break
    for version in list_policies(db):
        for name, value in _components(json.loads(version.metrics_json or "{}")).items():
            found.versions.append({"version": f"v{version.id}", "component": name, "mean": value})
    return found
