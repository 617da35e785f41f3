"""Training logs (one row per optimisation step) and the job queue a worker takes work from."""

from __future__ import annotations

import json
from typing import Any

from sqlmodel import select

from storage.db import Database
from storage.tables import TrainingLog


def add_training_logs(db: Database, *, phase: str, rows: list[dict[str, Any]], job_id: int | None = None) -> None:
    """Store per-step metrics; each row needs a "step" key (the rest is free-form numbers)."""
    with db.session() as s:
        s.add_all(TrainingLog(job_id=job_id, phase=phase, step=int(r["step"]), metrics_json=json.dumps(r))
                  for r in rows)


def training_logs(db: Database, *, phase: str | None = None, job_id: int | None = None) -> list[dict[str, Any]]:
    q = select(TrainingLog).order_by(TrainingLog.id)
    if phase:
        q = q.where(TrainingLog.phase == phase)
    if job_id is not None:
        q = q.where(TrainingLog.job_id == job_id)
    with db.session() as s:
        return [{"job_id": r.job_id, "phase": r.phase, **json.loads(r.metrics_json)} for r in s.exec(q)]
