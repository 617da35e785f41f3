"""Taking back a judgment: the labeling page's "Undo", one transaction.

An annotator may take back their LAST judgment within `undo_seconds` of saving it. The judgment row
goes, the pair's count drops by the one slot that judgment held, and the pair is leased to the
annotator again (same sides, a fresh lease), so the page shows it again and their lease holds its
slot as a serve does; the pair they were shown after the judgment (if any) is handed back. The undo
is written to the audit log in the same transaction.

It is final after the window, after their next judgment, and after one undo: a judgment is undone
only while it is the annotator's newest and no undo of theirs has happened since it was saved (so
taking back the second of two judgments does not reopen the first). Racing undos (two tabs, a double
press) delete the row once: the loser finds it gone and changes nothing. k stays right because the
count drops only with the row this undo deleted; on PostgreSQL the pair row is locked first, as a
judgment locks it.
"""

from __future__ import annotations

import json
import random
from datetime import datetime, timedelta

from sqlalchemy import and_, bindparam, delete, exists, func, insert, select, update
from sqlalchemy.engine import Connection

from storage.db import Database
from storage.labeling.pairs import AnnotatorScreen, LeaseRow
from storage.labeling.serving import _UPSERT_LEASE, _event, _screen, check_active
from storage.tables import Annotator, AuditEvent, Judgment, Lease, Pair, utcnow

J, P, L, A, AUD = (t.__table__ for t in (Judgment, Pair, Lease, Annotator, AuditEvent))
UNDO_ACTION = "judgment_undo"
_ANN, _JID = bindparam("annotator"), bindparam("judgment")
_THE_JUDGMENT = select(J).where(J.c.id == _JID, J.c.annotator_id == _ANN)
_NEWEST = select(func.max(J.c.id)).where(J.c.annotator_id == _ANN)
_USERNAME = select(A.c.username).where(A.c.id == _ANN)
_UNDONE_SINCE = select(exists().where(AUD.c.actor == bindparam("actor"), AUD.c.action == UNDO_ACTION,
                                      AUD.c.created_at >= bindparam("since")))
_LOCK_PAIR = select(P.c.id).where(P.c.id == bindparam("pair")).with_for_update()
_DELETE = delete(J).where(J.c.id == _JID, J.c.annotator_id == _ANN)
_FREE_SLOT = (update(P).where(P.c.id == bindparam("pair"), P.c.n_judgments > 0)
              .values(n_judgments=P.c.n_judgments - 1))
_DROP_LIVE_LEASES = delete(L).where(and_(L.c.annotator_id == _ANN, L.c.expires_at > bindparam("now")))


def _undoable(conn: Connection, annotator_id: int, judgment_id: int, now: datetime, undo_seconds: float
              ) -> tuple[object | None, str]:
    """The judgment row if this annotator may still take it back, and their username."""
    ids = {"annotator": annotator_id, "judgment": judgment_id}
    row = conn.execute(_THE_JUDGMENT, ids).first()
    username = conn.execute(_USERNAME, ids).scalar_one()
    if row is None or conn.execute(_NEWEST, ids).scalar() != judgment_id:
        return None, username
    if _aware(row.created_at, now) < now - timedelta(seconds=undo_seconds):
        return None, username
    if conn.execute(_UNDONE_SINCE, {"actor": username, "since": row.created_at}).scalar():
        return None, username
    return row, username


def undo_judgment(db: Database, annotator_id: int, *, judgment_id: int | None, undo_seconds: float,
                  lease_seconds: int, since: datetime, address: str = "", rng: random.Random | None = None,
                  control_rate: float = 0.0) -> AnnotatorScreen:
    """Take back the annotator's judgment `judgment_id` and show its pair again (outcome "undone"), or,
    when it is no longer theirs to take back (window over, a later judgment, undone already), change
    nothing and show their current pair (outcome "undo_too_late"). JudgmentError for a disabled or
    unknown annotator."""
    ev = _event(db, annotator_id, lease_seconds, since, rng, control_rate)
    with db.transaction() as conn:
        now = utcnow()
        check_active(conn, annotator_id)
        row, username = (None, "") if judgment_id is None else _undoable(conn, annotator_id, judgment_id, now,
                                                                           undo_seconds)
        if row is None:
            return _screen(conn, ev, now, "undo_too_late")
        if ev.locking:
            conn.execute(_LOCK_PAIR, {"pair": row.pair_id})
        if conn.execute(_DELETE, {"annotator": annotator_id, "judgment": judgment_id}).rowcount != 1:
            return _screen(conn, ev, now, "undo_too_late")  # a racing undo took it back first
        conn.execute(_FREE_SLOT, {"pair": row.pair_id})
        conn.execute(_DROP_LIVE_LEASES, {"annotator": annotator_id, "now": now})
        lease = LeaseRow(row.pair_id, annotator_id, row.left_side, now, now + timedelta(seconds=lease_seconds))
        conn.execute(_UPSERT_LEASE[conn.dialect.name], {"pair": row.pair_id, "annotator": annotator_id,
                                                        "v_left": lease.left_side, "v_served": now,
                                                        "v_expires": lease.expires_at})
        conn.execute(insert(AUD).values(
            created_at=now, actor=username[:64], action=UNDO_ACTION, address=(address or "")[:64],
            params_json=json.dumps({"pair": row.pair_id, "judgment": judgment_id, "choice": row.choice,
                                    "seconds_after": round((now - _aware(row.created_at, now)).total_seconds(), 3)},
                                   sort_keys=True)))
        return _screen(conn, ev, now, "undone", row.pair_id, mine=lease)


def _aware(moment: datetime, like: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=like.tzinfo)
