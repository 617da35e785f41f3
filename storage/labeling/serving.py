"""Serving pairs to annotators and recording their judgments; the labeling page's events, each one
transaction: show the annotator's screen, submit a verdict and show the next pair, skip.

k means k: a pair never gets more than `judgments_wanted` judgments. A served pair is leased to
its annotator; a judgment on a live lease always has its slot. A judgment on an expired lease is
accepted only while the pair still has a slot nobody else holds (its judgments plus other
annotators' live leases below k), otherwise it is refused with `SlotTaken`. The check and the
count update are one guarded UPDATE of the pair row (row-locked first on PostgreSQL), so racing
submissions cannot both take the last slot.

A verdict is matched against the serve the page showed (its serve token, `storage.labeling.pairs`); which
sample was on the left comes from the lease, never from the client. Statements are built once at
import (Core, bound parameters): building a SQLAlchemy expression per call cost more than running it.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, bindparam, delete, exists, func, insert, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from storage.db import Database
from storage.judges import hint_on
from storage.labeling.controls import CONTROL_KIND, next_control_pair
from storage.labeling.pairs import (
    AnnotatorProgress,
    AnnotatorScreen,
    JudgmentError,
    LeaseRow,
    ServedPair,
    SlotTaken,
    check_judgment,
    choice_from_screen,
    parse_serve_token,
    serve_stamp,
    serve_token,
)
from storage.tables import Annotator, Judgment, Lease, Pair, Prompt, Sample, Skip, utcnow

P, L, J, K, S, PR, A = (t.__table__ for t in (Pair, Lease, Judgment, Skip, Sample, Prompt, Annotator))
SA, SB = S.alias("sa"), S.alias("sb")
# Which side goes left, drawn per serve from the system source (no seeded state shared by threads).
SIDE_DRAW = random.SystemRandom()
_ANN, _PAIR, _NOW = bindparam("annotator"), bindparam("pair"), bindparam("now")
_LEASE_COLS = (L.c.pair_id, L.c.left_side, L.c.served_at, L.c.expires_at)
# The account check rides along with the first read of each event (one query, not two).
_ACTIVE_AND_LIVE_LEASE = (select(A.c.active, *_LEASE_COLS)
                          .select_from(A.outerjoin(L, and_(L.c.annotator_id == A.c.id, L.c.expires_at > _NOW)))
                          .where(A.c.id == _ANN).order_by(L.c.id).limit(1))
_ACTIVE_AND_LEASE_ON = (select(A.c.active, *_LEASE_COLS)
                        .select_from(A.outerjoin(L, and_(L.c.annotator_id == A.c.id, L.c.pair_id == _PAIR)))
                        .where(A.c.id == _ANN))
_ACTIVE = select(A.c.active).where(A.c.id == _ANN)
_LEASE = select(*_LEASE_COLS).where(L.c.pair_id == _PAIR, L.c.annotator_id == _ANN)
_MY_LIVE_LEASE = select(*_LEASE_COLS).where(L.c.annotator_id == _ANN, L.c.expires_at > _NOW).order_by(L.c.id).limit(1)
# Other annotators' live leases on the pair in the enclosing statement.
_OTHERS_LEASING = (select(func.count()).select_from(L)
                   .where(L.c.pair_id == P.c.id, L.c.annotator_id != _ANN, L.c.expires_at > _NOW).scalar_subquery())
_HAS_FREE_SLOT = P.c.n_judgments + _OTHERS_LEASING < P.c.judgments_wanted
_NEXT_OPEN = (select(P.c.id)
              .where(P.c.n_judgments < P.c.judgments_wanted,
                     ~exists(select(J.c.id).where(J.c.pair_id == P.c.id, J.c.annotator_id == _ANN)),
                     ~exists(select(K.c.id).where(K.c.pair_id == P.c.id, K.c.annotator_id == _ANN)),
                     _HAS_FREE_SLOT)
              .order_by(P.c.priority.desc(), P.c.round.desc(), P.c.info_score.desc(), P.c.id).limit(1))
_NEXT_OPEN_LOCKED = _NEXT_OPEN.with_for_update(skip_locked=True, of=P)
_STILL_FREE = select(P.c.id).where(P.c.id == _PAIR, _HAS_FREE_SLOT)


def _upsert_lease(dialect: Any) -> Any:  # noqa: ANN401 - a dialect module and its statement
    """Insert this annotator's lease on the pair, or redraw the one they hold: one statement."""
    stmt = dialect.insert(L).values(pair_id=_PAIR, annotator_id=_ANN, left_side=bindparam("v_left"),
                                    served_at=bindparam("v_served"), expires_at=bindparam("v_expires"))
    return stmt.on_conflict_do_update(index_elements=[L.c.pair_id, L.c.annotator_id], set_={
        "left_side": stmt.excluded.left_side, "served_at": stmt.excluded.served_at,
        "expires_at": stmt.excluded.expires_at})


_UPSERT_LEASE = {"sqlite": _upsert_lease(sqlite), "postgresql": _upsert_lease(postgresql)}
_DROP_LEASE = delete(L).where(L.c.pair_id == _PAIR, L.c.annotator_id == _ANN)
_MINE = select(func.count()).select_from(J).where(J.c.annotator_id == _ANN)
_PROGRESS_COLS = (_MINE.scalar_subquery().label("judged_total"),
                  _MINE.where(J.c.created_at >= bindparam("since")).scalar_subquery().label("judged_since"),
                  select(func.count()).select_from(P).where(P.c.n_judgments < P.c.judgments_wanted)
                  .scalar_subquery().label("pairs_open"))
_PROGRESS = select(*_PROGRESS_COLS)
_TEXT_COLS = (PR.c.messages_json, SA.c.text.label("text_a"), SB.c.text.label("text_b"),
              SA.c.finish_reason.label("finish_a"), SA.c.token_count.label("tokens_a"),
              SB.c.finish_reason.label("finish_b"), SB.c.token_count.label("tokens_b"))
_PAIR_TEXTS = (P.join(PR, PR.c.id == P.c.prompt_id).join(SA, SA.c.id == P.c.sample_a_id)
               .join(SB, SB.c.id == P.c.sample_b_id))
_TEXTS = select(*_TEXT_COLS).select_from(_PAIR_TEXTS).where(P.c.id == _PAIR)
# The served pair's texts and the annotator's progress line in one query.
_TEXTS_AND_PROGRESS = select(*_TEXT_COLS, *_PROGRESS_COLS).select_from(_PAIR_TEXTS).where(P.c.id == _PAIR)
_PAIR_ROW = select(P.c.id).where(P.c.id == _PAIR)
_PAIR_ROW_LOCKED = _PAIR_ROW.with_for_update()
_JUDGMENT = select(J).where(J.c.pair_id == _PAIR, J.c.annotator_id == _ANN)
# A control pair (known answer, `storage.labeling.controls`) wants no judgments of its own (k = 0): every
# annotator it was served to may judge it.
_IS_CONTROL = P.c.kind == CONTROL_KIND
_TAKE_SLOT_LIVE = (update(P).where(P.c.id == _PAIR, or_(P.c.n_judgments < P.c.judgments_wanted, _IS_CONTROL))
                   .values(n_judgments=P.c.n_judgments + 1))
_TAKE_SLOT_EXPIRED = (update(P).where(P.c.id == _PAIR, or_(_HAS_FREE_SLOT, _IS_CONTROL))
                      .values(n_judgments=P.c.n_judgments + 1))
_ADD_JUDGMENT = insert(J)
_SKIPPED = select(K.c.id).where(K.c.pair_id == _PAIR, K.c.annotator_id == _ANN)
_ADD_SKIP = insert(K)
_UNREAD = object()  # record_on's default: read the lease itself



# -- steps, each inside the caller's transaction --------------------------------------------------
def _lease_of(row: Any, annotator_id: int) -> LeaseRow | None:
    if row is None or row.pair_id is None:
        return None
    return LeaseRow(row.pair_id, annotator_id, row.left_side, row.served_at, row.expires_at)


def _checked_active(row: Any) -> None:
    if row is None or not row.active:
        raise JudgmentError("unknown or disabled annotator")


def active_live_lease(conn: Connection, annotator_id: int, now: datetime) -> LeaseRow | None:
    """The annotator's live lease (or None); JudgmentError if the account is unknown or disabled."""
    row = conn.execute(_ACTIVE_AND_LIVE_LEASE, {"annotator": annotator_id, "now": now}).first()
    _checked_active(row)
    return _lease_of(row, annotator_id)


def active_lease_on(conn: Connection, pair_id: int, annotator_id: int) -> LeaseRow | None:
    """The annotator's lease (live or expired) on this pair, or None; JudgmentError if the account
    is unknown or disabled."""
    row = conn.execute(_ACTIVE_AND_LEASE_ON, {"annotator": annotator_id, "pair": pair_id}).first()
    _checked_active(row)
    return _lease_of(row, annotator_id)


def check_active(conn: Connection, annotator_id: int) -> None:
    """JudgmentError unless the annotator exists and is active."""
    if not conn.execute(_ACTIVE, {"annotator": annotator_id}).scalar():
        raise JudgmentError("unknown or disabled annotator")


def lease_row(conn: Connection, pair_id: int, annotator_id: int) -> LeaseRow | None:
    """This annotator's lease (live or expired) on this pair, or None."""
    return _lease_of(conn.execute(_LEASE, {"pair": pair_id, "annotator": annotator_id}).first(), annotator_id)


def lease_next(conn: Connection, annotator_id: int, *, now: datetime, lease_seconds: int, rng: random.Random,
               locking: bool, mine: LeaseRow | None | object = _UNREAD, control_rate: float = 0.0) -> LeaseRow | None:
    """The annotator's live lease, or a new lease on the next pair for them, or None.

    A pair qualifies when the annotator has neither judged nor skipped it and its judgments plus
    other annotators' live leases are below k. Highest priority first, then highest info_score,
    then oldest. `control_rate`: the probability that the serve is a control pair this annotator
    has not seen instead (only while open pairs exist, so a stream is never controls alone). `locking`
    (PostgreSQL) takes the pair row with FOR UPDATE SKIP LOCKED so racing annotators never share
    the last slot. `mine`: the live lease when the caller has just read it (`active_live_lease`).
    """
    params = {"annotator": annotator_id, "now": now}
    if mine is _UNREAD:
        mine = _lease_of(conn.execute(_MY_LIVE_LEASE, params).first(), annotator_id)
    if mine is not None:
        return mine
    pair_id = conn.execute(_NEXT_OPEN_LOCKED if locking else _NEXT_OPEN, params).scalar()
    passed: list[int] = []
    while pair_id is not None and locking:
        # The locking SELECT counted leases in a snapshot taken before it waited for the lock, so
        # it can miss a lease committed by the previous lock holder; count again now.
        if conn.execute(_STILL_FREE, {**params, "pair": pair_id}).first() is not None:
            break
        passed.append(pair_id)
        pair_id = conn.execute(_NEXT_OPEN_LOCKED.where(P.c.id.not_in(passed)), params).scalar()
    if pair_id is None:
        return None
    pair_id = next_control_pair(conn, annotator_id, control_rate, rng) or pair_id
    lease = LeaseRow(pair_id, annotator_id, rng.choice("ab"), now, now + timedelta(seconds=lease_seconds))
    conn.execute(_UPSERT_LEASE[conn.dialect.name], {"pair": pair_id, "annotator": annotator_id,
                                                    "v_left": lease.left_side, "v_served": lease.served_at,
                                                    "v_expires": lease.expires_at})
    return lease


def _served(lease: LeaseRow, row: Any) -> ServedPair:
    r = row
    cut_a = r.tokens_a if r.finish_a == "length" else None
    cut_b = r.tokens_b if r.finish_b == "length" else None
    (left, left_cut), (right, right_cut) = (((r.text_a, cut_a), (r.text_b, cut_b)) if lease.left_side == "a"
                                            else ((r.text_b, cut_b), (r.text_a, cut_a)))
    return ServedPair(pair_id=lease.pair_id, prompt_messages=json.loads(r.messages_json),
                      left_text=left, right_text=right, left_side=lease.left_side, expires_at=lease.expires_at,
                      served_at=lease.served_at, left_cut_tokens=left_cut, right_cut_tokens=right_cut)


def served_pair(conn: Connection, lease: LeaseRow) -> ServedPair:
    """The pair behind `lease` with its texts on the sides the lease drew (one query)."""
    return _served(lease, conn.execute(_TEXTS, {"pair": lease.pair_id}).one())


def record_on(conn: Connection, *, pair_id: int, annotator_id: int, choice: str, strength: str | None,
              rationale: str | None, latency_ms: int | None, require_served: bool, now: datetime,
              locking: bool, lease: LeaseRow | None | object = _UNREAD, hints: bool = False) -> tuple[dict, bool]:
    """Record a checked judgment (see `check_judgment`); returns the stored row and whether it was
    created. A repeat returns the stored row unchanged. SlotTaken when k would be exceeded.
    `hints`: the page shows AI judges' choices (`labeling.show_suggestions`): the judgment is marked made under
    a hint when a judge has judged the pair.
    `lease`: the annotator's lease on the pair when the caller has read it in this transaction (only
    their own requests change it, and a twin's judgment is found below after the row lock)."""
    ids = {"pair": pair_id, "annotator": annotator_id}
    if conn.execute(_PAIR_ROW_LOCKED if locking else _PAIR_ROW, ids).first() is None:
        raise JudgmentError(f"pair {pair_id} does not exist")
    # Read after the row lock: a twin request that held it has committed by now (PostgreSQL's next
    # statement sees it), so a double click finds its first row here.
    existing = conn.execute(_JUDGMENT, ids).first()
    if existing is not None:
        return dict(existing._mapping), False
    if lease is _UNREAD:
        lease = lease_row(conn, pair_id, annotator_id)
    if lease is None and require_served:
        raise JudgmentError(f"pair {pair_id} was not served to this annotator")
    live = lease is not None and lease.expires_at > now
    if conn.execute(_TAKE_SLOT_LIVE if live else _TAKE_SLOT_EXPIRED, {**ids, "now": now}).rowcount != 1:
        raise SlotTaken(f"pair #{pair_id} already has all the judgments it wants (your time on it ran out and "
                        "the slot went to someone else); this verdict was not saved")
    row = {"pair_id": pair_id, "annotator_id": annotator_id, "choice": choice, "strength": strength,
           "rationale": rationale, "latency_ms": latency_ms, "left_side": lease.left_side if lease else "a",
           "created_at": now, "hint_shown": hints and hint_on(conn, pair_id)}
    row["id"] = conn.execute(_ADD_JUDGMENT, row).inserted_primary_key[0]
    if lease is not None:
        conn.execute(_DROP_LEASE, ids)
    return row, True


def skip_on(conn: Connection, *, pair_id: int, annotator_id: int) -> None:
    """The annotator passes on this pair: never served to them again; its slot frees up."""
    ids = {"pair": pair_id, "annotator": annotator_id}
    if conn.execute(_PAIR_ROW, ids).first() is None:
        raise JudgmentError(f"pair {pair_id} does not exist")
    conn.execute(_DROP_LEASE, ids)
    if conn.execute(_SKIPPED, ids).first() is None:
        conn.execute(_ADD_SKIP, {"pair_id": pair_id, "annotator_id": annotator_id, "created_at": utcnow()})


def _progress(row: Any) -> AnnotatorProgress:
    return AnnotatorProgress(judged_since=row.judged_since, judged_total=row.judged_total,
                             pairs_open=row.pairs_open)


def progress_on(conn: Connection, annotator_id: int, since: datetime) -> AnnotatorProgress:
    return _progress(conn.execute(_PROGRESS, {"annotator": annotator_id, "since": since}).one())


# -- one step, one transaction ------------------------------------------------------------------
def next_pair_for(
    db: Database, annotator_id: int, *, lease_seconds: int = 300, rng: random.Random | None = None,
    control_rate: float = 0.0,
) -> ServedPair | None:
    """The pair this annotator should judge next, leased to them, or None when nothing is left.
    A live lease the annotator already holds is served again (same pair, same sides)."""
    with db.transaction() as conn:
        check_active(conn, annotator_id)
        lease = lease_next(conn, annotator_id, now=utcnow(), lease_seconds=lease_seconds, rng=rng or SIDE_DRAW,
                           locking=not db.is_sqlite, control_rate=control_rate)
        return None if lease is None else served_pair(conn, lease)


def record_judgment(
    db: Database, *, pair_id: int, annotator_id: int, choice: str, strength: str | None = None,
    rationale: str | None = None, latency_ms: int | None = None, require_served: bool = True,
) -> tuple[Judgment, bool]:
    """Record one annotator's judgment of a pair. Returns `(judgment, created)`.

    Idempotent: a repeat (double click, retried request) returns the stored row with
    `created=False` and changes nothing. `choice` is in the pair's own a/b terms; the side that was
    shown on the left is taken from the server's lease, never from the client. Raises `SlotTaken`
    when the pair's k slots are gone (see the module docstring).
    """
    strength, rationale = check_judgment(choice, strength, rationale)
    with db.transaction() as conn:
        check_active(conn, annotator_id)
        row, created = record_on(conn, pair_id=pair_id, annotator_id=annotator_id, choice=choice, strength=strength,
                                 rationale=rationale, latency_ms=latency_ms, require_served=require_served,
                                 now=utcnow(), locking=not db.is_sqlite)
    return Judgment(**row), created


def skip_pair(db: Database, *, pair_id: int, annotator_id: int) -> None:
    """The annotator passes on this pair: it is never served to them again and its slot frees up."""
    with db.transaction() as conn:
        check_active(conn, annotator_id)
        skip_on(conn, pair_id=pair_id, annotator_id=annotator_id)


def annotator_progress(db: Database, annotator_id: int, *, since: datetime) -> AnnotatorProgress:
    """Counts for the annotator's progress line, read in one query."""
    with db.transaction() as conn:
        return progress_on(conn, annotator_id, since)


# -- the labeling page's events: one transaction each -------------------------------------------
@dataclass(frozen=True)
class _Event:
    annotator_id: int
    lease_seconds: int
    since: datetime
    rng: random.Random
    locking: bool
    control_rate: float


def _screen(conn: Connection, ev: _Event, now: datetime, outcome: str = "", outcome_pair: int | None = None,
            created: bool = False, mine: LeaseRow | None | object = _UNREAD) -> AnnotatorScreen:
    lease = lease_next(conn, ev.annotator_id, now=now, lease_seconds=ev.lease_seconds, rng=ev.rng,
                       locking=ev.locking, mine=mine, control_rate=ev.control_rate)
    if lease is None:
        return AnnotatorScreen(pair=None, token="", progress=progress_on(conn, ev.annotator_id, ev.since),
                               outcome=outcome, outcome_pair=outcome_pair, created=created)
    row = conn.execute(_TEXTS_AND_PROGRESS, {"pair": lease.pair_id, "annotator": ev.annotator_id,
                                             "since": ev.since}).one()
    return AnnotatorScreen(pair=_served(lease, row), token=serve_token(lease.pair_id, lease.served_at),
                           progress=_progress(row), outcome=outcome, outcome_pair=outcome_pair, created=created)


def _shown_lease(conn: Connection, ev: _Event, token: str | None) -> tuple[str, int | None, LeaseRow | None]:
    """The annotator's lease behind the serve the page showed, or the outcome that says why not;
    JudgmentError if the account is unknown or disabled."""
    parsed = parse_serve_token(token)
    if parsed is None:
        check_active(conn, ev.annotator_id)
        return "no_token", None, None
    pair_id, stamp = parsed
    lease = active_lease_on(conn, pair_id, ev.annotator_id)
    if lease is None:
        judged = conn.execute(_JUDGMENT, {"pair": pair_id, "annotator": ev.annotator_id}).first()
        return ("already_saved" if judged is not None else "not_yours"), pair_id, None
    if serve_stamp(lease.served_at) != stamp:
        # Re-served (e.g. in another tab after the lease expired), possibly with sides swapped.
        return "shown_again", pair_id, None
    return "", pair_id, lease


def _event(db: Database, annotator_id: int, lease_seconds: int, since: datetime,
           rng: random.Random | None, control_rate: float) -> _Event:
    return _Event(annotator_id, lease_seconds, since, rng or SIDE_DRAW, not db.is_sqlite, control_rate)


def annotator_screen(db: Database, annotator_id: int, *, lease_seconds: int, since: datetime,
                     rng: random.Random | None = None, control_rate: float = 0.0) -> AnnotatorScreen:
    """The annotator's current pair (the same one again on reload) and progress; JudgmentError for
    a disabled or unknown annotator."""
    ev = _event(db, annotator_id, lease_seconds, since, rng, control_rate)
    with db.transaction() as conn:
        now = utcnow()
        return _screen(conn, ev, now, mine=active_live_lease(conn, annotator_id, now))


def submit_verdict(db: Database, annotator_id: int, *, token: str | None, pick: str, strength: str | None = None,
                   rationale: str | None = None, lease_seconds: int, since: datetime,
                   rng: random.Random | None = None, control_rate: float = 0.0, hints: bool = False) -> AnnotatorScreen:
    """Record `pick` ("left", "right", "tie", "both_bad") for the serve named by `token`, then serve
    the next pair, in one transaction. A token that is not the annotator's current serve records
    nothing and says why (`outcome`); input no page would send raises JudgmentError. `hints`: see `record_on`."""
    choice_from_screen(pick, "a")  # validates the pick before anything is read
    strength, rationale = check_judgment("a", strength, rationale)
    ev = _event(db, annotator_id, lease_seconds, since, rng, control_rate)
    with db.transaction() as conn:
        now = utcnow()
        outcome, pair_id, lease = _shown_lease(conn, ev, token)
        if lease is None:
            return _screen(conn, ev, now, outcome, pair_id)
        latency_ms = max(0, int((now - lease.served_at).total_seconds() * 1000))
        try:
            row, created = record_on(conn, pair_id=lease.pair_id, annotator_id=annotator_id,
                                     choice=choice_from_screen(pick, lease.left_side), strength=strength,
                                     rationale=rationale, latency_ms=latency_ms, require_served=True, now=now,
                                     locking=ev.locking, lease=lease, hints=hints)
        except SlotTaken:
            return _screen(conn, ev, now, "slot_taken", lease.pair_id)
        shown = _screen(conn, ev, now, "saved" if created else "already_saved", lease.pair_id, created)
        return replace(shown, judgment_id=row["id"])  # what the page's undo names (storage.labeling.undo)


def skip_shown(db: Database, annotator_id: int, *, token: str | None, lease_seconds: int, since: datetime,
               rng: random.Random | None = None, control_rate: float = 0.0) -> AnnotatorScreen:
    """Skip the serve named by `token` (never served to this annotator again), then serve the next."""
    ev = _event(db, annotator_id, lease_seconds, since, rng, control_rate)
    with db.transaction() as conn:
        now = utcnow()
        outcome, pair_id, lease = _shown_lease(conn, ev, token)
        if lease is None:
            return _screen(conn, ev, now, outcome, pair_id)
        skip_on(conn, pair_id=pair_id, annotator_id=annotator_id)
        return _screen(conn, ev, now, "skipped", pair_id)
