"""Annotator accounts with scrypt-hashed passwords."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

from sqlalchemy import delete, update
from sqlmodel import select

from storage.accounts.sessions import end_sessions_of
from storage.db import Database
from storage.tables import ROLES, Annotator, Lease

_SCRYPT_N, _SCRYPT_R, _SCRYPT_P = 2**14, 8, 1


class UserError(ValueError):
    """A user operation refused for a reason a person can act on."""


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=_SCRYPT_N, r=_SCRYPT_R, p=_SCRYPT_P, dklen=32)
    b64 = base64.b64encode
    return f"scrypt${_SCRYPT_N}${_SCRYPT_R}${_SCRYPT_P}${b64(salt).decode()}${b64(digest).decode()}"


def check_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
    except ValueError:
        return False
    if scheme != "scrypt":
        return False
    expected = base64.b64decode(digest)
    actual = hashlib.scrypt(
        password.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p), dklen=len(expected)
    )
    return hmac.compare_digest(actual, expected)


def check_username(username: str) -> str:
    """The username stripped; UserError if empty, over 64 characters or holding control characters."""
    username = username.strip()
    if not username or len(username) > 64:
        raise UserError("username must be 1-64 characters")
    if not username.isprintable():
        raise UserError(f"username {username!r} holds control characters; use printable characters only")
    return username


def check_role(role: str) -> str:
    if role not in ROLES:
        raise UserError(f"role must be one of {', '.join(ROLES)}, not {role!r}")
    return role


def check_new_password(password: str, min_length: int) -> None:
    if len(password) < min_length:
        raise UserError(f"password must be at least {min_length} characters (auth.min_password_length)")


def create_annotator(db: Database, username: str, password: str, role: str = "annotator", *,
                     min_password_length: int = 8) -> Annotator:
    username = check_username(username)
    check_role(role)
    check_new_password(password, min_password_length)
    with db.session() as s:
        if s.exec(select(Annotator).where(Annotator.username == username)).first():
            raise UserError(f"user {username!r} already exists")
        user = Annotator(username=username, password_hash=hash_password(password), role=role)
        s.add(user)
        s.flush()
        s.refresh(user)
        return user


def authenticate(db: Database, username: str, password: str) -> Annotator | None:
    """The active user with these credentials, or None (same answer for unknown user and bad password)."""
    with db.session() as s:
        user = s.exec(select(Annotator).where(Annotator.username == username.strip())).first()
    if user is None:
        check_password(password, hash_password("timing-equaliser"))
        return None
    if not check_password(password, user.password_hash) or not user.active or user.kind != "human":
        return None  # an AI judge's account never logs in, whatever the password
    return user


def get_annotator(db: Database, username: str) -> Annotator | None:
    with db.session() as s:
        return s.exec(select(Annotator).where(Annotator.username == username)).first()


def list_annotators(db: Database) -> list[Annotator]:
    with db.session() as s:
        return list(s.exec(select(Annotator).order_by(Annotator.id)))


def _change(db: Database, username: str, *, release_leases: bool = False, **values: object) -> int:
    """Set `values` on the user, then end their open sessions (they log in again under the new
    state); `release_leases` also frees the pairs they hold. Returns how many sessions ended."""
    A = Annotator.__table__
    with db.transaction() as conn:
        user = conn.execute(select(A.c.id, A.c.kind).where(A.c.username == username)).first()
        if user is None:
            raise UserError(f"no user named {username!r}; `rlhf user list` shows them")
        if user.kind != "human" and ("role" in values or "password_hash" in values):
            raise UserError(f"{username!r} is an AI judge: it never logs in and has no role (`rlhf judge` manages it)")
        user_id = user.id
        conn.execute(update(A).where(A.c.id == user_id).values(**values))
        if release_leases:
            conn.execute(delete(Lease.__table__).where(Lease.__table__.c.annotator_id == user_id))
    return end_sessions_of(db, username, reason="account changed")


def set_active(db: Database, username: str, active: bool) -> int:
    """Enable or disable an account; ends its sessions, and a disable releases its leases.
    Returns how many sessions ended."""
    return _change(db, username, release_leases=not active, active=active)


def set_password(db: Database, username: str, password: str, *, min_password_length: int = 8) -> int:
    """Replace a password; ends the user's sessions. Returns how many ended."""
    check_new_password(password, min_password_length)
    return _change(db, username, password_hash=hash_password(password))


def set_role(db: Database, username: str, role: str) -> int:
    """Change a role; ends the user's sessions. Returns how many ended."""
    return _change(db, username, role=check_role(role))


def count_annotators(db: Database) -> int:
    with db.session() as s:
        return len(s.exec(select(Annotator.id)).all())

