"""AI judges: their accounts (annotators of kind "ai": no password that opens anything, no role), their
settings, the pairs a judge run takes, and its judgments, stored in the one judgment table beside people's.

A judge's judgment takes no slot of a pair's k (`judgments_wanted` counts people): the judge is an extra
opinion, and CrowdBT learns how much it is worth. A run's judgments, its running totals and its routing of
pairs to people are written in one transaction, so a failed run stores nothing.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, bindparam, case, exists, insert, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.orm import aliased

from storage.accounts.users import UserError, check_username
from storage.db import Database
from storage.tables import NO_ROLE, Annotator, Judge, Judgment, Lease, Pair, Prompt, Sample, utcnow

A, JG, J, P, L = Annotator.__table__, Judge.__table__, Judgment.__table__, Pair.__table__, Lease.__table__
# Not a scrypt hash: `check_password` refuses every password against it, whatever it is.
NO_PASSWORD = "!ai-judge: never logs in"
JUDGED_KINDS = ("control", "train", "imported")  # eval pairs measure people's win rate: no judge votes there


class JudgeError(ValueError):
    """A judge operation refused for a reason a person can act on (one sentence)."""


@dataclass(frozen=True)
class JudgeRow:
    name: str
    annotator_id: int
    kind: str
    settings: dict[str, Any]
    rubric: str | None
    active: bool
    stats: dict[str, float]
    created_at: datetime


@dataclass(frozen=True)
class PairToJudge:
    pair_id: int
    kind: str
    prompt_messages: list[dict[str, str]]
    text_a: str
    text_b: str
    open: bool  # still wants people's judgments


@dataclass(frozen=True)
class AIJudgment:
    """A judge's verdict on a pair in its own a/b terms; `left_side`: the side it was shown first in the order
    the run drew first."""

    pair_id: int
    choice: str
    confidence: float
    rationale: str | None
    left_side: str = "a"


@dataclass(frozen=True)
class RouteChange:
    """What the routing does to an open pair: serve it to people first (`priority`), or close it to people
    (`close`: the judge's label stands)."""

    pair_id: int
    priority: int | None = None
    close: bool = False


@dataclass(frozen=True)
class JudgeHint:
    judge: str
    choice: str
    confidence: float | None


def create_judge(db: Database, name: str, kind: str, settings: dict[str, Any], rubric: str | None = None) -> JudgeRow:
    """Add an AI judge and its account (kind "ai", role "none", a password hash nothing matches)."""
    try:
        name = check_username(name)
    except UserError as exc:
        raise JudgeError(str(exc)) from None
    with db.transaction() as conn:
        if conn.execute(select(A.c.id).where(A.c.username == name)).first() is not None:
            raise JudgeError(f"an account named {name!r} already exists; choose another judge name")
        now = utcnow()
        user_id = conn.execute(insert(A).values(username=name, password_hash=NO_PASSWORD, role=NO_ROLE, active=True,
                                                created_at=now, kind="ai")).inserted_primary_key[0]
        conn.execute(insert(JG).values(annotator_id=user_id, kind=kind, settings_json=json.dumps(settings),
                                       rubric=rubric, stats_json="{}", created_at=now))
    found = get_judge(db, name)
    assert found is not None
    return found


def _judges_query():  # noqa: ANN202
    return select(JG, A.c.id.label("user_id"), A.c.username, A.c.active).join(A, A.c.id == JG.c.annotator_id)


def _judge_rows(rows: Sequence[Any]) -> list[JudgeRow]:
    return [JudgeRow(name=r.username, annotator_id=r.user_id, kind=r.kind, settings=json.loads(r.settings_json),
                     rubric=r.rubric, active=r.active, stats=json.loads(r.stats_json), created_at=r.created_at)
            for r in rows]


def get_judge(db: Database, name: str) -> JudgeRow | None:
    with db.transaction() as conn:
        rows = conn.execute(_judges_query().where(A.c.username == name)).all()
    return (_judge_rows(rows) or [None])[0]


def list_judges(db: Database) -> list[JudgeRow]:
    with db.transaction() as conn:
        return _judge_rows(conn.execute(_judges_query().order_by(JG.c.id)).all())


def pairs_for_judge(db: Database, annotator_id: int, limit: int, kinds: Sequence[str] = JUDGED_KINDS
                    ) -> list[PairToJudge]:
    """Up to `limit` pairs of `kinds` this judge has not judged: control pairs first (its accuracy), then open
    pairs in the order people are served them (what routing can still change), then pairs people judged
    (its agreement with them), newest first."""
    sa_, sb_ = aliased(Sample), aliased(Sample)
    is_open = P.c.n_judgments < P.c.judgments_wanted
    q = (select(P.c.id, P.c.kind, Prompt.messages_json, sa_.text.label("text_a"), sb_.text.label("text_b"),
                is_open.label("is_open"))
         .join(Prompt, Prompt.id == P.c.prompt_id).join(sa_, sa_.id == P.c.sample_a_id)
         .join(sb_, sb_.id == P.c.sample_b_id)
         .where(P.c.kind.in_(list(kinds)),
                ~exists(select(J.c.id).where(J.c.pair_id == P.c.id, J.c.annotator_id == annotator_id)))
         .order_by(case((P.c.kind == "control", 0), (is_open, 1), else_=2), P.c.priority.desc(), P.c.round.desc(),
                   P.c.info_score.desc(), P.c.id.desc())
         .limit(limit))
    with db.transaction() as conn:
        rows = conn.execute(q).all()
    return [PairToJudge(r.id, r.kind, json.loads(r.messages_json), r.text_a, r.text_b, bool(r.is_open)) for r in rows]


def record_ai_judgments(db: Database, annotator_id: int, judgments: Sequence[AIJudgment], *,
                        stats: dict[str, float] | None = None, routes: Sequence[RouteChange] = ()) -> int:
    """Store a judge run in one transaction: its judgments (taking no slot of k; a pair it has judged already is
    left as it is), `stats` added to its running totals, and the routing of open pairs (a pair someone holds a
    live lease on is not closed). Returns how many judgments were added. JudgeError if the account is not an
    active AI judge."""
    now = utcnow()
    added = 0
    with db.transaction() as conn:
        account = conn.execute(select(A.c.kind, A.c.active, A.c.username).where(A.c.id == annotator_id)).first()
        if account is None or account.kind != "ai" or not account.active:
            raise JudgeError("this judge is disabled or no longer exists; nothing was stored")
        ids = [j.pair_id for j in judgments]
        judged: set[int] = set()
        for start in range(0, len(ids), 500):  # SQLite binds at most 32766 parameters a statement
            judged.update(conn.execute(select(J.c.pair_id).where(J.c.annotator_id == annotator_id,
                                                                 J.c.pair_id.in_(ids[start:start + 500]))).scalars())
        rows = [{"pair_id": j.pair_id, "annotator_id": annotator_id, "choice": j.choice, "strength": None,
                 "rationale": j.rationale, "left_side": j.left_side, "latency_ms": None, "created_at": now,
                 "confidence": j.confidence, "hint_shown": False} for j in judgments if j.pair_id not in judged]
        if rows:
            conn.execute(insert(J), rows)
            added = len(rows)
        if stats:
            stored = json.loads(conn.execute(select(JG.c.stats_json).where(JG.c.annotator_id == annotator_id))
                                .scalar() or "{}")
            for key, value in stats.items():
                stored[key] = stored.get(key, 0) + value
            conn.execute(update(JG).where(JG.c.annotator_id == annotator_id).values(stats_json=json.dumps(stored)))
        still_open = and_(P.c.n_judgments < P.c.judgments_wanted, P.c.kind != "control")
        for route in routes:
            if route.priority is not None:
                conn.execute(update(P).where(P.c.id == route.pair_id, still_open, P.c.priority < route.priority)
                             .values(priority=route.priority))
            if route.close:
                leased = exists(select(L.c.id).where(L.c.pair_id == P.c.id, L.c.expires_at > now))
                conn.execute(update(P).where(P.c.id == route.pair_id, still_open, ~leased)
                             .values(judgments_wanted=P.c.n_judgments))
    return added


def set_judge_active(db: Database, name: str, active: bool) -> None:
    """Disable (or enable) a judge: its judgments stay, it takes no more jobs."""
    with db.transaction() as conn:
        found = conn.execute(update(A).where(A.c.username == name, A.c.kind == "ai").values(active=active))
        if found.rowcount != 1:
            raise JudgeError(f"no judge named {name!r}; `rlhf judge list` shows them")


def judge_hint(db: Database, pair_id: int) -> JudgeHint | None:
    """The newest judgment of an active AI judge on the pair (the labeling page's hint), or None."""
    q = (select(A.c.username, J.c.choice, J.c.confidence).join(A, A.c.id == J.c.annotator_id)
         .where(J.c.pair_id == pair_id, A.c.kind == "ai", A.c.active.is_(True)).order_by(J.c.id.desc()).limit(1))
    with db.transaction() as conn:
        row = conn.execute(q).first()
    return None if row is None else JudgeHint(row.username, row.choice, row.confidence)


_HINTED = (select(J.c.id).join(A, A.c.id == J.c.annotator_id)
           .where(J.c.pair_id == bindparam("pair"), A.c.kind == "ai", A.c.active.is_(True)).limit(1))


def hint_on(conn: Connection, pair_id: int) -> bool:
    """Whether an active AI judge has judged the pair, inside the caller's transaction: with
    `labeling.show_suggestions` the page showed its choice, so a person's judgment of it was made under a hint."""
    return conn.execute(_HINTED, {"pair": pair_id}).first() is not None
