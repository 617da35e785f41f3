"""Training logs (one row per optimisation step) and the job queue a worker takes work from."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from sqlalchemy import or_, text, update
from sqlmodel import func, select

from storage.db import Database
from storage.tables import Annotator, Job, Judgment, Pair, TrainingLog, utcnow


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


# -- the job queue ------------------------------------------------------------------------


class JobError(ValueError):
    """A job request refused for a reason a person can act on."""


def enqueue_job(db: Database, kind: str, params: dict[str, Any] | None = None, *, unique: bool = True,
                max_attempts: int = 1) -> Job:
    """Queue a job. With `unique`, an identical kind already queued or running is returned instead.
    `max_attempts`: how many times it may be started in all when its worker dies (`requeue_or_fail`)."""
    with db.session() as s:
        # Check and insert in one transaction, so two callers cannot both queue the same kind.
        if unique and (existing := s.exec(_active_query(kind)).first()) is not None:
            return existing
        job = Job(kind=kind, params_json=json.dumps(params or {}), max_attempts=max(1, max_attempts))
        s.add(job)
        s.flush()
        s.refresh(job)
        return job


def claim_next_job(db: Database, worker_id: str, kinds: tuple[str, ...] | None = None, *,
                   training_kinds: tuple[str, ...] = ()) -> Job | None:
    """Atomically take the oldest queued job for this worker whose backoff (`retry_at`) has passed, or None;
    its `attempts` goes up by one.

    Training jobs (`training_kinds`, the job table's: rlhf_core.registry.training_kinds()) run one at a
    time across all workers: none is claimed while another runs.
    PostgreSQL workers serialise claims with a transaction-level advisory lock and skip rows
    other workers hold (`FOR UPDATE SKIP LOCKED`); SQLite serialises with BEGIN IMMEDIATE.
    """
    now = utcnow()
    with db.session() as s:
        if not db.is_sqlite:
            s.exec(text("SELECT pg_advisory_xact_lock(4242)"))
        training_running = s.exec(
            select(Job.id).where(Job.status == "running", Job.kind.in_(training_kinds))
        ).first() is not None
        q = (select(Job).where(Job.status == "queued", or_(Job.retry_at.is_(None), Job.retry_at <= now))
             .order_by(Job.id).limit(1))
        if kinds:
            q = q.where(Job.kind.in_(kinds))
        if training_running:
            q = q.where(Job.kind.not_in(training_kinds))
        if not db.is_sqlite:
            q = q.with_for_update(skip_locked=True)
        job = s.exec(q).first()
        if job is None:
            return None
        job.status, job.worker_id, job.started_at, job.heartbeat_at = "running", worker_id, now, now
        job.progress, job.attempts, job.retry_at = 0.0, job.attempts + 1, None
        job.message = "started" if job.attempts == 1 else f"started again: attempt {job.attempts} of {job.max_attempts}"
        s.add(job)
        s.flush()
        s.refresh(job)
        return job


def update_job_progress(db: Database, job_id: int, progress: float, message: str = "") -> None:
    """Progress in [0, 1] and a short message; also the job's heartbeat."""
    with db.session() as s:
        s.exec(update(Job).where(Job.id == job_id, Job.status == "running")
               .values(progress=max(0.0, min(1.0, progress)), message=message[:500], heartbeat_at=utcnow()))


def heartbeat_job(db: Database, job_id: int) -> None:
    with db.session() as s:
        s.exec(update(Job).where(Job.id == job_id, Job.status == "running").values(heartbeat_at=utcnow()))


def finish_job(db: Database, job_id: int, metrics: dict[str, Any]) -> None:
    with db.session() as s:
        s.exec(update(Job).where(Job.id == job_id).values(
            status="done", progress=1.0, message="done", metrics_json=json.dumps(metrics, default=str),
            finished_at=utcnow()))


def fail_job(db: Database, job_id: int, error: str) -> None:
    with db.session() as s:
        s.exec(update(Job).where(Job.id == job_id).values(status="failed", error=error[-4000:], finished_at=utcnow()))


def requeue_or_fail(db: Database, job_id: int, why: str, backoff_s: float = 0.0) -> Job | None:
    """A running job whose worker is gone (`why`, a sentence): queued again while it has attempts left, not to
    be claimed for `backoff_s` · 2^(attempts − 1) seconds (doubling per attempt), else failed. The message says
    which; None when the job is not running any more (another worker got there first)."""
    with db.session() as s:
        job = s.exec(select(Job).where(Job.id == job_id, Job.status == "running").with_for_update()).first()
        if job is None:
            return None
        _requeue_or_fail(job, why, backoff_s)
        s.add(job)
        s.flush()
        s.refresh(job)
        return job


def _requeue_or_fail(job: Job, why: str, backoff_s: float) -> None:
    now = utcnow()
    if job.attempts < job.max_attempts:
        job.status, job.error, job.worker_id = "queued", None, None
        job.retry_at = now + timedelta(seconds=backoff_s * 2 ** max(0, job.attempts - 1))
        job.message = (f"{why}; queued again: attempt {job.attempts + 1} of {job.max_attempts}, not before "
                       f"{job.retry_at:%H:%M:%S} UTC")[-500:]
        return
    tries = f" (attempt {job.attempts} of {job.max_attempts})" if job.max_attempts > 1 else ""
    job.status, job.finished_at = "failed", now
    job.error = f"{why}{tries}; retry with `rlhf jobs retry {job.id}`"


def recover_stale_jobs(db: Database, stale_after_s: float, backoff_s: float = 0.0) -> list[int]:
    """Running jobs whose worker stopped sending heartbeats (killed, crashed, its machine gone) are queued
    again while they have attempts left, else marked failed (`requeue_or_fail`); returns their ids."""
    cutoff = utcnow() - timedelta(seconds=stale_after_s)
    with db.session() as s:
        stale = s.exec(select(Job).where(Job.status == "running", Job.heartbeat_at < cutoff)).all()
        for job in stale:
            last = job.heartbeat_at.strftime("%Y-%m-%d %H:%M:%S")
            _requeue_or_fail(job, f"worker {job.worker_id} stopped responding (last heartbeat {last} UTC)", backoff_s)
            s.add(job)
        return [j.id for j in stale]


def retry_job(db: Database, job_id: int) -> Job:
    """Queue a copy of a failed job."""
    with db.session() as s:
        job = s.get(Job, job_id)
        if job is None:
            raise JobError(f"job {job_id} does not exist")
        if job.status != "failed":
            raise JobError(f"job {job_id} is {job.status}; only failed jobs can be retried")
        params = json.loads(job.params_json)
    return enqueue_job(db, job.kind, {**params, "retry_of": job_id}, max_attempts=job.max_attempts)


def get_job(db: Database, job_id: int) -> Job | None:
    with db.session() as s:
        return s.get(Job, job_id)


def list_jobs(db: Database, limit: int = 50) -> list[Job]:
    with db.session() as s:
        return list(s.exec(select(Job).order_by(Job.id.desc()).limit(limit)))


def judgments_since_last_round(db: Database) -> int:
    """Judgments recorded after the newest round job was queued (all of them before the first).

    Judgments of control pairs are not counted: they add nothing a round could train on. Nor are AI judges':
    a judge runs on every new sample by itself (`judges.auto_run`), so counting it would start rounds with no
    person in the loop.
    """
    with db.session() as s:
        last = s.exec(select(func.max(Job.created_at)).where(Job.kind == "round")).one()
        q = (select(func.count()).select_from(Judgment).join(Pair, Pair.id == Judgment.pair_id)
             .join(Annotator, Annotator.id == Judgment.annotator_id)
             .where(Pair.kind != "control", Annotator.kind == "human"))
        if last is not None:
            q = q.where(Judgment.created_at > last)
        return s.exec(q).one()


def _active_query(kind: str):  # noqa: ANN202 - a SQLModel select
    return select(Job).where(Job.kind == kind, Job.status.in_(("queued", "running"))).order_by(Job.id).limit(1)


def active_job(db: Database, kind: str) -> Job | None:
    """The oldest queued or running job of `kind`, if any."""
    with db.session() as s:
        return s.exec(_active_query(kind)).first()


def last_finished_job(db: Database, kind: str) -> Job | None:
    """The most recent job of `kind` that finished successfully (for "the last one took ..." estimates)."""
    with db.session() as s:
        return s.exec(select(Job).where(Job.kind == kind, Job.status == "done", Job.started_at.is_not(None),
                                        Job.finished_at.is_not(None)).order_by(Job.id.desc())).first()
