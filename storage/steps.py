"""Step labels (labeling mode "steps"): serving a sampled response to an annotator for step labeling, storing the
labels, reading them back for training and export, and the process reward model's versions.

Which responses are step tasks is the caller's to say (`sources`: the prompt sets in steps mode, or None for every
train prompt): every response sampled by the loop for those prompts, served to annotators who have not labeled or
skipped it, fewest labels first, the newest policy's first. Serving writes the annotator's row for the response
(status "served", a lease until `expires_at`), and a live lease holds one of the response's `wanted` slots, so
annotators working at once get different responses. Two annotators picking the last slot in the same instant may
both label it: one label over `wanted`, never lost work. A reload re-serves the annotator's live lease. Saving
turns the row into "labeled" in one transaction with its audit row; a second save of the same response (a double
click) changes nothing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, exists, func, insert, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite

from storage.db import Database
from storage.labeling.pairs import JudgmentError
from storage.tables import Annotator, AuditEvent, PRMVersion, Prompt, Sample, StepLabel, utcnow

SL, S, PR, A, AUD, PV = (t.__table__ for t in (StepLabel, Sample, Prompt, Annotator, AuditEvent, PRMVersion))


class StepTaskGone(ValueError):
    """The response is not (or no longer) served to this annotator; the message is one sentence for them."""


@dataclass(frozen=True)
class StepTask:
    """A response served for step labeling: its prompt, its text, and when this serve started."""

    sample_id: int
    prompt_id: int
    prompt_messages: list[dict[str, str]]
    text: str
    finish_reason: str | None
    served_at: datetime


@dataclass(frozen=True)
class StepLabelRow:
    """A stored set of step labels with what training and export need."""

    id: int
    sample_id: int
    prompt_id: int
    prompt_messages: list[dict[str, str]]
    prompt_split: str
    prompt_source: str
    steps: list[str]
    labels: list[str | None]
    first_wrong: int | None
    annotator: str
    labeled_at: datetime


def _ensure_active(conn: Any, annotator_id: int) -> None:  # noqa: ANN401 - a Connection
    if not conn.execute(select(A.c.active).where(A.c.id == annotator_id)).scalar():
        raise JudgmentError("unknown or disabled annotator")


def _task_query(sources: list[str] | None) -> Any:  # noqa: ANN401 - a Select
    query = (select(S.c.id, S.c.prompt_id, S.c.text, S.c.finish_reason, PR.c.messages_json)
             .select_from(S.join(PR, PR.c.id == S.c.prompt_id))
             .where(PR.c.split == "train", S.c.policy_version_id.is_not(None), S.c.text != ""))
    return query if sources is None else query.where(PR.c.source.in_(sources))


def _task(row: Any, served_at: datetime) -> StepTask:  # noqa: ANN401 - a Row
    return StepTask(sample_id=row.id, prompt_id=row.prompt_id, prompt_messages=json.loads(row.messages_json),
                    text=row.text, finish_reason=row.finish_reason, served_at=served_at)


def next_step_task(db: Database, annotator_id: int, *, sources: list[str] | None, wanted: int = 1,
                   lease_seconds: float = 300.0) -> StepTask | None:
    """The response this annotator should label now (their live lease first), leased to them; None when no step
    task is open for them. JudgmentError for a disabled account."""
    now = utcnow()
    expires = now + timedelta(seconds=lease_seconds)
    with db.transaction() as conn:
        _ensure_active(conn, annotator_id)
        live = conn.execute(_task_query(sources).add_columns(SL.c.served_at)
                            .join(SL, SL.c.sample_id == S.c.id)
                            .where(SL.c.annotator_id == annotator_id, SL.c.status == "served", SL.c.expires_at > now)
                            .order_by(SL.c.id).limit(1)).first()
        if live is not None:
            return _task(live, live.served_at)
        held = (select(func.count()).select_from(SL)
                .where(SL.c.sample_id == S.c.id,
                       or_(SL.c.status == "labeled", and_(SL.c.status == "served", SL.c.expires_at > now)))
                .scalar_subquery())
        done_by_me = exists().where(SL.c.sample_id == S.c.id, SL.c.annotator_id == annotator_id,
                                    SL.c.status.in_(("labeled", "skipped")))
        row = conn.execute(_task_query(sources).where(~done_by_me, held < wanted)
                           .order_by(held, S.c.policy_version_id.desc(), S.c.id).limit(1)).first()
        if row is None:
            return None
        values = {"sample_id": row.id, "annotator_id": annotator_id, "status": "served", "served_at": now,
                  "expires_at": expires}
        dialect = {"sqlite": sqlite, "postgresql": postgresql}[conn.dialect.name]
        conn.execute(dialect.insert(SL).values(**values).on_conflict_do_update(
            index_elements=[SL.c.sample_id, SL.c.annotator_id],
            set_={"status": "served", "served_at": now, "expires_at": expires}))
    return _task(row, now)


def served_step_task(db: Database, annotator_id: int, sample_id: int) -> StepTask:
    """The response `sample_id` as served to this annotator (to check labels against its steps), or StepTaskGone
    when it was never served to them; JudgmentError for a disabled account."""
    with db.transaction() as conn:
        _ensure_active(conn, annotator_id)
        row = conn.execute(_task_query(None).add_columns(SL.c.served_at, SL.c.status)
                           .join(SL, SL.c.sample_id == S.c.id)
                           .where(SL.c.annotator_id == annotator_id, S.c.id == sample_id)).first()
    if row is None:
        raise StepTaskGone(f"Not saved: response #{sample_id} was not shown to you for step labels. Label the one "
                           "on screen.")
    return _task(row, row.served_at)


def record_step_labels(db: Database, annotator_id: int, sample_id: int, *, steps: list[str],
                       labels: list[str | None], first_wrong: int | None = None, actor: str = "",
                       address: str = "") -> bool:
    """Store this annotator's labels of the response's `steps` (checked by the caller against the response: see
    `rlhf_core.data.steps.check_step_labels`) with one audit row; True if stored now, False if they were stored
    already (a repeat). StepTaskGone when the response was never served to them or they skipped it."""
    now = utcnow()
    with db.transaction() as conn:
        _ensure_active(conn, annotator_id)
        row = conn.execute(select(SL.c.id, SL.c.status, SL.c.served_at)
                           .where(SL.c.sample_id == sample_id, SL.c.annotator_id == annotator_id)).first()
        if row is None or row.status == "skipped":
            raise StepTaskGone(f"Not saved: response #{sample_id} is not yours to label (not shown to you, or "
                               "skipped). Label the one on screen.")
        if row.status == "labeled":
            return False
        served = row.served_at if row.served_at.tzinfo else row.served_at.replace(tzinfo=now.tzinfo)
        conn.execute(update(SL).where(SL.c.id == row.id).values(
            status="labeled", steps_json=json.dumps(steps), labels_json=json.dumps(labels), first_wrong=first_wrong,
            labeled_at=now, latency_ms=int((now - served).total_seconds() * 1000)))
        conn.execute(insert(AUD).values(
            created_at=now, actor=(actor or f"annotator:{annotator_id}")[:64], action="step_labels",
            address=(address or "")[:64], params_json=json.dumps(
                {"sample": sample_id, "steps": len(steps), "bad": labels.count("bad"), "first_wrong": first_wrong},
                sort_keys=True)))
    return True


def skip_step_task(db: Database, annotator_id: int, sample_id: int) -> None:
    """The annotator passes on this response: it is not served to them again, and its slot is free."""
    with db.transaction() as conn:
        _ensure_active(conn, annotator_id)
        conn.execute(update(SL).where(SL.c.sample_id == sample_id, SL.c.annotator_id == annotator_id,
                                      SL.c.status == "served").values(status="skipped", expires_at=utcnow()))


def step_label_rows(db: Database) -> list[StepLabelRow]:
    """Every labeled response (oldest label first) with its prompt, steps, labels and annotator."""
    query = (select(SL, S.c.prompt_id, PR.c.messages_json, PR.c.split, PR.c.source, A.c.username)
             .select_from(SL.join(S, S.c.id == SL.c.sample_id).join(PR, PR.c.id == S.c.prompt_id)
                          .join(A, A.c.id == SL.c.annotator_id))
             .where(SL.c.status == "labeled").order_by(SL.c.labeled_at, SL.c.id))
    with db.transaction() as conn:
        rows = conn.execute(query).all()
    return [StepLabelRow(id=r.id, sample_id=r.sample_id, prompt_id=r.prompt_id,
                         prompt_messages=json.loads(r.messages_json), prompt_split=r.split, prompt_source=r.source,
                         steps=json.loads(r.steps_json), labels=json.loads(r.labels_json), first_wrong=r.first_wrong,
                         annotator=r.username, labeled_at=r.labeled_at)
            for r in rows]


def step_label_counts(db: Database) -> dict[str, int]:
    """{"responses": labeled responses, "labels": sets of step labels, "steps": labeled steps, "bad": bad steps}."""
    rows = step_label_rows(db)
    labels = [label for r in rows for label in r.labels if label is not None]
    return {"responses": len({r.sample_id for r in rows}), "labels": len(rows), "steps": len(labels),
            "bad": labels.count("bad")}


def add_prm_version(db: Database, *, adapter_path: str, trained_on: int, heldout_step_accuracy: float | None,
                    metrics: dict[str, Any]) -> PRMVersion:
    """Record a trained process reward model (its adapter already saved at `adapter_path`)."""
    with db.transaction() as conn:
        new_id = conn.execute(insert(PV).values(
            adapter_path=adapter_path, trained_on=trained_on, heldout_step_accuracy=heldout_step_accuracy,
            metrics_json=json.dumps(metrics, sort_keys=True, default=str), created_at=utcnow()).returning(PV.c.id)
        ).scalar_one()
    return current_prm(db, new_id)


def current_prm(db: Database, version_id: int | None = None) -> PRMVersion | None:
    """Process reward model `version_id`, or the newest one; None when there is none."""
    query = select(PV).order_by(PV.c.id.desc()).limit(1) if version_id is None else select(PV).where(
        PV.c.id == version_id)
    with db.transaction() as conn:
        row = conn.execute(query).first()
    return None if row is None else PRMVersion(**row._mapping)


def count_prm_versions(db: Database) -> int:
    with db.transaction() as conn:
        return conn.execute(select(func.count()).select_from(PV)).scalar_one()
