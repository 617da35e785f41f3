"""Login sessions in the database, so that every app process behind a load balancer accepts a login
made on any other, and a logout (or an operator ending someone's sessions) holds everywhere.

The browser keeps a random token; the `login_session` row keeps its SHA-256 only. A session is
valid while it has not ended, has not expired, and its user is active.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import insert, select, update

from storage.db import Database
from storage.tables import Annotator, LoginSession, utcnow

SES, A = LoginSession.__table__, Annotator.__table__


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
        user = conn.execute(select(A.c.id, A.c.username, A.c.role, A.c.active)
                            .where(A.c.username == username)).first()
        if user is None or not user.active:
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
                   A.c.active.is_(True))).first()
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
