"""Small reads the labeling app needs: the lease behind a served pair and an annotator's progress."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlmodel import func, select

from storage.db import Database
from storage.tables import Judgment, Lease, Pair


@dataclass(frozen=True)
class LeaseInfo:
    """The server's record of one serve: which sample was on the left and when it was served."""

    pair_id: int
    annotator_id: int
    left_side: str
    served_at: datetime
    expires_at: datetime


@dataclass(frozen=True)
class AnnotatorProgress:
    judged_since: int  # judgments by this annotator since the given time
    judged_total: int  # all judgments by this annotator
    pairs_open: int  # pairs that still want judgments (all annotators)


def lease_of(db: Database, *, pair_id: int, annotator_id: int) -> LeaseInfo | None:
    """The lease (live or expired) this annotator holds on this pair, or None."""
    with db.session() as s:
        lease = s.exec(select(Lease).where(Lease.pair_id == pair_id, Lease.annotator_id == annotator_id)).first()
        if lease is None:
            return None
        return LeaseInfo(pair_id=lease.pair_id, annotator_id=lease.annotator_id, left_side=lease.left_side,
                         served_at=lease.served_at, expires_at=lease.expires_at)


def has_judged(db: Database, *, pair_id: int, annotator_id: int) -> bool:
    with db.session() as s:
        row = s.exec(
            select(Judgment.id).where(Judgment.pair_id == pair_id, Judgment.annotator_id == annotator_id)
        ).first()
        return row is not None


def annotator_progress(db: Database, annotator_id: int, *, since: datetime) -> AnnotatorProgress:
    """Counts for the annotator's progress line, read in one transaction."""
    with db.session() as s:
        mine = select(func.count()).select_from(Judgment).where(Judgment.annotator_id == annotator_id)
        total = s.exec(mine).one()
        recent = s.exec(mine.where(Judgment.created_at >= since)).one()
        pairs_open = s.exec(
            select(func.count()).select_from(Pair).where(Pair.n_judgments < Pair.judgments_wanted)
        ).one()
        return AnnotatorProgress(judged_since=recent, judged_total=total, pairs_open=pairs_open)
