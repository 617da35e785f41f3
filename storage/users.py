"""Annotator accounts with scrypt-hashed passwords."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

from sqlmodel import select

from storage.db import Database
from storage.tables import ROLES, Annotator

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


def create_annotator(db: Database, username: str, password: str, role: str = "annotator") -> Annotator:
    username = username.strip()
    if not username or len(username) > 64:
        raise UserError("username must be 1-64 characters")
    if role not in ROLES:
        raise UserError(f"role must be one of {', '.join(ROLES)}, not {role!r}")
    if len(password) < 8:
        raise UserError("password must be at least 8 characters")
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
    if not check_password(password, user.password_hash) or not user.active:
        return None
    return user


def get_annotator(db: Database, username: str) -> Annotator | None:
    with db.session() as s:
        return s.exec(select(Annotator).where(Annotator.username == username)).first()


def list_annotators(db: Database) -> list[Annotator]:
    with db.session() as s:
        return list(s.exec(select(Annotator).order_by(Annotator.id)))


def set_active(db: Database, username: str, active: bool) -> Annotator:
    with db.session() as s:
        user = s.exec(select(Annotator).where(Annotator.username == username)).first()
        if user is None:
            raise UserError(f"no user named {username!r}")
        user.active = active
        s.add(user)
        return user


def count_annotators(db: Database) -> int:
    with db.session() as s:
        return len(s.exec(select(Annotator.id)).all())


def set_password(db: Database, username: str, password: str) -> Annotator:
    """Replace a user's password (`rlhf quickstart --reset-passwords`); existing sessions stay valid."""
    if len(password) < 8:
        raise UserError("password must be at least 8 characters")
    with db.session() as s:
        user = s.exec(select(Annotator).where(Annotator.username == username)).first()
        if user is None:
            raise UserError(f"no user named {username!r}")
        user.password_hash = hash_password(password)
        s.add(user)
        return user
