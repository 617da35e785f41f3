"""Login against database users, the first operator account, and per-event role checks."""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable

import anyio
import gradio as gr

from storage import Annotator, Database, UserError, authenticate, count_annotators, create_annotator, get_annotator

FIRST_OPERATOR_NAME = "admin"


def ensure_first_operator(db: Database) -> tuple[str, str] | None:
    """On a database with no users, create an operator with a random password and return
    `(username, password)` (shown once by the caller); otherwise None."""
    if count_annotators(db) > 0:
        return None
    password = secrets.token_urlsafe(16)
    try:
        create_annotator(db, FIRST_OPERATOR_NAME, password, role="operator")
    except UserError:
        return None  # another server process created it first
    return FIRST_OPERATOR_NAME, password


def make_login_check(db: Database) -> Callable[[str, str], Awaitable[bool]]:
    """Gradio's `auth=` callable. Async so the scrypt check runs in a worker thread, not the event loop."""

    async def login_check(username: str, password: str) -> bool:
        user = await anyio.to_thread.run_sync(authenticate, db, username, password)
        return user is not None

    return login_check


def require_user(db: Database, request: gr.Request | None, role: str | None = None) -> Annotator:
    """The logged-in user, re-read from the database for every event: must exist, be active and,
    when `role` is given, hold it. Raises `gr.Error` (shown to the page and to API clients)."""
    username = getattr(request, "username", None) if request is not None else None
    if not username:
        raise gr.Error("Not logged in.", print_exception=False)
    user = get_annotator(db, username)
    if user is None or not user.active:
        raise gr.Error("This account is disabled or no longer exists.", print_exception=False)
    if role is not None and user.role != role:
        raise gr.Error(f"Only {role}s may do this.", print_exception=False)
    return user
