"""Login sessions in the database, so that every app process behind a load balancer accepts a login
made on any other, and a logout (or an operator ending someone's sessions) holds everywhere.

The browser keeps a random token; the `login_session` row keeps its SHA-256 only. A session is
valid while it has not ended, has not expired, and its user is active.

Also here: the login throttle, whose counters are the failed rows of `login_attempt` (so every app
process sees the same count), and the append-only audit log of who did what, when, from where.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, insert, or_, select, update

from storage.db import Database
from storage.tables import Annotator, AuditEvent, LoginAttempt, LoginSession, utcnow

SES, A = LoginSession.__table__, Annotator.__table__
AUD, ATT = AuditEvent.__table__, LoginAttempt.__table__


@dataclass(frozen=True)
class SessionUser:
    """Who a valid session belongs to, as its lookup found them."""

    id: int  # the annotator's id
    username: str
    role: str
    active: bool
    expires_at: datetime  # UTC; the session ends then


def hash_token(token: str) -> str:
    """The stored form of a session token (hex SHA-256): the token itself never reaches the database."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def start_session(db: Database, username: str, token: str, *, lifetime_s: float) -> SessionUser | None:
    """Store a session for `username` (after the caller checked the password), valid `lifetime_s`
    seconds; None if the user does not exist or is disabled."""
    now = utcnow()
    with db.transaction() as conn:
        user = conn.execute(select(A.c.id, A.c.username, A.c.role, A.c.active, A.c.kind)
                            .where(A.c.username == username)).first()
        if user is None or not user.active or user.kind != "human":  # an AI judge never logs in
            return None
        expires = now + timedelta(seconds=lifetime_s)
        conn.execute(insert(SES).values(token_hash=hash_token(token), annotator_id=user.id, created_at=now,
                                        expires_at=expires))
    return SessionUser(id=user.id, username=user.username, role=user.role, active=True, expires_at=expires)


def session_user(db: Database, token: str) -> SessionUser | None:
    """The user of a valid session (not ended, not expired, user active), or None. One query."""
    if not token:
        return None
    now = utcnow()
    with db.transaction() as conn:
        row = conn.execute(
            select(A.c.id, A.c.username, A.c.role, A.c.active, SES.c.expires_at)
            .join(A, A.c.id == SES.c.annotator_id)
            .where(SES.c.token_hash == hash_token(token), SES.c.ended_at.is_(None), SES.c.expires_at > now,
                   A.c.active.is_(True), A.c.kind == "human")).first()
    if row is None:
        return None
    return SessionUser(id=row.id, username=row.username, role=row.role, active=row.active,
                       expires_at=row.expires_at)


def end_session(db: Database, token: str, *, reason: str = "logout") -> bool:
    """End one session (logout); True if it was still open."""
    with db.transaction() as conn:
        ended = conn.execute(update(SES).where(SES.c.token_hash == hash_token(token), SES.c.ended_at.is_(None))
                             .values(ended_at=utcnow(), end_reason=reason[:32]))
    return ended.rowcount > 0


def end_sessions_of(db: Database, username: str, *, reason: str = "ended by operator") -> int:
    """End every open session of `username` (log them out everywhere); returns how many were open.
    App processes that cached the session stop accepting it within their cache time (seconds)."""
    with db.transaction() as conn:
        user_id = conn.execute(select(A.c.id).where(A.c.username == username)).scalar()
        if user_id is None:
            return 0
        ended = conn.execute(update(SES).where(SES.c.annotator_id == user_id, SES.c.ended_at.is_(None))
                             .values(ended_at=utcnow(), end_reason=reason[:32]))
    return ended.rowcount


def open_session_count(db: Database, username: str) -> int:
    """Sessions of `username` that are neither ended nor expired."""
    with db.transaction() as conn:
        return len(conn.execute(
            select(SES.c.id).join(A, A.c.id == SES.c.annotator_id)
            .where(A.c.username == username, SES.c.ended_at.is_(None), SES.c.expires_at > utcnow())).all())


@dataclass(frozen=True)
class AuditRow:
    """One audit event as listed by `rlhf audit` and the operator page."""

    id: int
    created_at: datetime  # UTC
    actor: str
    action: str
    address: str
    params: dict[str, Any]


def record_audit(db: Database, actor: str, action: str, *, address: str = "", **params: Any) -> None:
    """Append one audit row; `params` must be JSON-serialisable (strings, numbers, lists)."""
    with db.transaction() as conn:
        conn.execute(insert(AUD).values(created_at=utcnow(), actor=actor[:64], action=action[:32],
                                        address=(address or "")[:64],
                                        params_json=json.dumps(params, sort_keys=True, default=str)))


def audit_events(db: Database, *, since: datetime | None = None, actor: str | None = None,
                 action: str | None = None, limit: int | None = None) -> list[AuditRow]:
    """Audit rows, newest first, filtered by time (UTC, inclusive), actor and action."""
    query = select(AUD).order_by(AUD.c.id.desc())
    if since is not None:
        query = query.where(AUD.c.created_at >= since)
    if actor is not None:
        query = query.where(AUD.c.actor == actor)
    if action is not None:
        query = query.where(AUD.c.action == action)
    if limit is not None:
        query = query.limit(limit)
    with db.transaction() as conn:
        rows = conn.execute(query).all()
    return [AuditRow(id=r.id, created_at=r.created_at, actor=r.actor, action=r.action, address=r.address,
                     params=json.loads(r.params_json)) for r in rows]


def login_cooldown_left(db: Database, username: str, address: str, *, max_failures: int,
                        window_seconds: float, cooldown_seconds: float) -> float:
    """Seconds this username or address must still wait before a login is considered (0: may try).

    Blocked when, for the username or for the address, `max_failures` failed attempts fell within
    `window_seconds` and the latest of them is under `cooldown_seconds` old. Attempts refused during a
    cool-down are not recorded, so waiting it out is enough."""
    now = utcnow()
    horizon = now - timedelta(seconds=window_seconds + cooldown_seconds)
    left = 0.0
    with db.transaction() as conn:
        for column, value in ((ATT.c.username, username), (ATT.c.address, address)):
            if not value:
                continue
            times = conn.execute(select(ATT.c.created_at).where(column == value, ATT.c.ok.is_(False),
                                                                ATT.c.created_at >= horizon)
                                 .order_by(ATT.c.created_at.desc()).limit(max_failures * 4)).scalars().all()
            left = max(left, _cooldown(times, now, max_failures, window_seconds, cooldown_seconds))
    return left


def _cooldown(times: list[datetime], now: datetime, n: int, window: float, cooldown: float) -> float:
    """Given failure times newest first: the cool-down left after the newest run of `n` failures
    within `window` seconds."""
    times = [t if t.tzinfo else t.replace(tzinfo=now.tzinfo) for t in times]  # SQLite gives naive UTC
    for i in range(len(times) - n + 1):
        newest, oldest = times[i], times[i + n - 1]
        if (newest - oldest).total_seconds() <= window:
            return max(0.0, cooldown - (now - newest).total_seconds())
    return 0.0


def record_login_attempt(db: Database, username: str, address: str, ok: bool) -> None:
    """Count one login try (for the throttle) and write its audit row, in one transaction."""
    now = utcnow()
    with db.transaction() as conn:
        conn.execute(insert(ATT).values(username=username[:64], address=address[:64], ok=ok, created_at=now))
        conn.execute(insert(AUD).values(created_at=now, actor=username[:64],
                                        action="login" if ok else "login_failed", address=address[:64],
                                        params_json="{}"))


def failed_login_count(db: Database, *, username: str | None = None, address: str | None = None) -> int:
    """Failed login attempts recorded for a username or an address (any time)."""
    conds = [c == v for c, v in ((ATT.c.username, username), (ATT.c.address, address)) if v is not None]
    with db.transaction() as conn:
        return conn.execute(select(func.count()).select_from(ATT)
                            .where(ATT.c.ok.is_(False), or_(*conds))).scalar_one()
