"""Accounts: add a user, disable or enable one, set or reset a password, change a role; from `rlhf user ...`
and the operator page alike. The rules are storage's (names of 1-64 printable characters, passwords of at
least `auth.min_password_length`) plus one here: nobody disables or demotes their own account (that would
lock the last operator out; a shell user is no account). Every change ends the user's open sessions (a
disable also frees the pairs they hold) and writes one audit row."""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from rlhf_core.service.actor import ActionRefused, Actor, audit
from rlhf_core.workspace import Workspace
from storage import Annotator, Database, UserError, create_annotator, set_active, set_password, set_role

PASSWORD_BYTES = 12  # secrets.token_urlsafe: 16 characters, 96 bits


@dataclass(frozen=True)
class AccountChange:
    user: str
    sessions_ended: int
    password: str | None = None  # a generated password, to be shown once


def generated_password(min_length: int) -> str:
    """A random URL-safe password of at least `min_length` characters."""
    password = secrets.token_urlsafe(PASSWORD_BYTES)
    while len(password) < min_length:
        password += secrets.token_urlsafe(PASSWORD_BYTES)
    return password


def _refused(exc: UserError) -> ActionRefused:
    return ActionRefused(str(exc))


def add_user(ws: Workspace, db: Database, name: str, role: str, actor: Actor, password: str | None = None
             ) -> tuple[Annotator, str | None]:
    """Create an account; without `password` one is generated and returned (to be shown once)."""
    min_length = ws.config.auth.min_password_length
    generated = generated_password(min_length) if password is None else None
    try:
        user = create_annotator(db, name or "", password or generated, role, min_password_length=min_length)
    except UserError as exc:
        raise _refused(exc) from None
    audit(db, actor, "user_add", user=user.username, role=user.role)
    return user, generated


def _not_yourself(name: str, actor: Actor) -> None:
    if name == actor.name:
        raise ActionRefused("you cannot disable or demote your own account (another operator can, or `rlhf user` "
                            "from a shell)")


def set_user_active(db: Database, name: str, active: bool, actor: Actor) -> AccountChange:
    if not active:
        _not_yourself(name, actor)
    try:
        ended = set_active(db, name, active)
    except UserError as exc:
        raise _refused(exc) from None
    audit(db, actor, "user_enable" if active else "user_disable", user=name, sessions_ended=ended)
    return AccountChange(name, ended)


def change_password(ws: Workspace, db: Database, name: str, actor: Actor, password: str | None = None
                    ) -> AccountChange:
    """Set `password`, or a generated one (returned, to be shown once)."""
    min_length = ws.config.auth.min_password_length
    generated = generated_password(min_length) if password is None else None
    try:
        ended = set_password(db, name, password or generated, min_password_length=min_length)
    except UserError as exc:
        raise _refused(exc) from None
    audit(db, actor, "user_set_password", user=name, sessions_ended=ended)
    return AccountChange(name, ended, generated)


def change_role(db: Database, name: str, role: str, actor: Actor) -> AccountChange:
    _not_yourself(name, actor)
    try:
        ended = set_role(db, name, role)
    except UserError as exc:
        raise _refused(exc) from None
    audit(db, actor, "user_set_role", user=name, role=role, sessions_ended=ended)
    return AccountChange(name, ended)
