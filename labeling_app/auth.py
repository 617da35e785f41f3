"""Logins against database users, sessions stored in the database, the first operator account, and
per-event user checks.

Gradio keeps logins in a per-app dict (`app.tokens`, token -> username) under a cookie whose
name holds a random per-app id. `install_sessions` replaces both in every Gradio app the server
mounts (the labeling page and the operator console): the dict by `SessionStore` (sessions in the
database) and the cookie id by one derived from the database, so one login is accepted by both
pages and by every other process behind a load balancer. Lookups are cached for
`SESSION_CACHE_SECONDS`; annotation events re-check that the user is active inside their own
transaction, so a disabled account is refused at once there and within seconds everywhere else.
"""

from __future__ import annotations

import hashlib
import html
import math
import secrets
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, MutableMapping
from dataclasses import dataclass
from typing import Any

import anyio
import gradio as gr
from fastapi import HTTPException, Request  # noqa: TC002 - FastAPI reads the route's annotations at run time
from fastapi.responses import JSONResponse, RedirectResponse
from fastapi.routing import APIRoute
from gradio import route_utils

from storage import (
    Annotator,
    Database,
    DatabaseUnavailable,
    SessionUser,
    UserError,
    authenticate,
    count_annotators,
    create_annotator,
    end_session,
    end_sessions_of,
    get_annotator,
    login_cooldown_left,
    record_login_attempt,
    session_user,
    start_session,
)

FIRST_OPERATOR_NAME = "admin"
SESSION_CACHE_SECONDS = 5.0  # how long a process trusts its last look at a session (logout, disable)
MAX_USERNAME_CHARS = 64
MAX_PASSWORD_CHARS = 1024
_CACHE_LIMIT = 50_000


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


def login_form_ok(username: str, password: str) -> bool:
    """Whether a login form is worth a database look: printable, sized like our accounts. Anything
    else (a NUL PostgreSQL cannot even compare, a megabyte of password) is refused like a wrong
    password, before any query."""
    if not username or len(username) > MAX_USERNAME_CHARS or len(password) > MAX_PASSWORD_CHARS:
        return False
    return username.isprintable() and "\x00" not in password


def make_login_check(db: Database) -> Callable[[str, str], Awaitable[bool]]:
    """Gradio's `auth=` callable. Async so the scrypt check runs in a worker thread, not the event loop."""

    async def login_check(username: str, password: str) -> bool:
        if not login_form_ok(username, password):
            return False
        user = await anyio.to_thread.run_sync(authenticate, db, username, password)
        return user is not None

    return login_check


def cookie_id(db: Database) -> str:
    """The login cookie's id (Gradio names it `access-token-<id>`): the same for every process on
    this database, different for another database on the same host."""
    return "rlhf-" + hashlib.sha256(db.identity().encode("utf-8")).hexdigest()[:20]


@dataclass(frozen=True)
class Throttle:
    """Login throttling (config [auth]): `max_failures` failed logins within `window_s` seconds, per
    username or per client address, refuse every login (a right password too) for `cooldown_s`."""

    max_failures: int = 5
    window_s: float = 900.0
    cooldown_s: float = 900.0


class SessionStore(MutableMapping[str, str]):
    """Gradio's `app.tokens` (session token -> username), kept in the database's `login_session`
    table. Gradio calls `get` on every request, `[token] = username` after a good login and `del`
    on logout. Each process caches what it read for `cache_seconds`."""

    def __init__(self, db: Database, *, lifetime_s: float, cache_seconds: float = SESSION_CACHE_SECONDS,
                 throttle: Throttle | None = None) -> None:
        self.db, self.lifetime_s, self.cache_seconds = db, lifetime_s, cache_seconds
        self.throttle = throttle or Throttle()
        self.cookie_id = cookie_id(db)
        self._cache: dict[str, tuple[float, SessionUser | None]] = {}
        self._by_name: dict[str, SessionUser] = {}  # the user behind each name's latest valid lookup
        self._lock = threading.Lock()

    def lookup(self, token: str | None) -> SessionUser | None:
        """The user of a valid session, from this process's cache while fresh, else the database."""
        if not token:
            return None
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(token)
        if hit is not None and now - hit[0] < self.cache_seconds:
            user = hit[1]
        else:
            try:
                user = session_user(self.db, token)
            except DatabaseUnavailable:
                if hit is None:
                    raise
                user = hit[1]  # the database is restarting: the last look stands, the event's transaction rechecks
            else:
                self._remember(token, user, now)
        if user is not None and user.expires_at.timestamp() <= time.time():
            return None
        return user

    def _remember(self, token: str, user: SessionUser | None, now: float) -> None:
        with self._lock:
            if len(self._cache) >= _CACHE_LIMIT:
                self._cache = {t: v for t, v in self._cache.items() if now - v[0] < self.cache_seconds}
                self._by_name = {u.username: u for _, u in self._cache.values() if u is not None}
            self._cache[token] = (now, user)
            if user is not None:
                self._by_name[user.username] = user

    def user_named(self, username: str) -> SessionUser | None:
        """The user this process last found behind a valid session of `username` (for an event whose
        session Gradio has just checked through `get`), or None."""
        with self._lock:
            return self._by_name.get(username)

    def forget(self, token: str) -> None:
        with self._lock:
            self._cache.pop(token, None)

    # -- the mapping Gradio sees -----------------------------------------------------
    def __getitem__(self, token: str) -> str:
        user = self.lookup(token)
        if user is None:
            raise KeyError(token)
        return user.username

    def __setitem__(self, token: str, username: str) -> None:
        user = start_session(self.db, username, token, lifetime_s=self.lifetime_s)
        if user is None:
            raise KeyError(username)  # disabled between the password check and now
        self._remember(token, user, time.monotonic())

    def __delitem__(self, token: str) -> None:
        self.forget(token)
        end_session(self.db, token)

    def __iter__(self) -> Iterator[str]:
        # Only what this process has seen; Gradio's own logout (which iterates) is replaced by ours.
        with self._lock:
            return iter([t for t, (_, user) in self._cache.items() if user is not None])

    def __len__(self) -> int:
        with self._lock:
            return sum(1 for _, user in self._cache.values() if user is not None)


def _logout_route(server: Any, store: SessionStore, path: str) -> Callable[..., Any]:
    def logout(request: Request, all_session: bool = False) -> RedirectResponse:
        """End this browser's session (`?all_session=true`: every session of the user) everywhere, then
        go to the server's root (the labeling page's login)."""
        token = (request.cookies.get(f"access-token-{store.cookie_id}")
                 or request.cookies.get(f"access-token-unsecure-{store.cookie_id}"))
        user = store.lookup(token)
        if token:
            del store[token]
        if all_session and user is not None:
            end_sessions_of(store.db, user.username, reason="logout everywhere")
        root = route_utils.get_root_url(request=request, route_path=path, root_path=server.root_path)
        response = RedirectResponse(url=root + "/", status_code=302)
        response.delete_cookie(key=f"access-token-{store.cookie_id}", path="/")
        response.delete_cookie(key=f"access-token-unsecure-{store.cookie_id}", path="/")
        return response

    return logout


def _login_route(store: SessionStore) -> Callable[..., Any]:
    async def login(request: Request) -> JSONResponse:
        """Gradio's login, throttled per username and client address with counters in the database,
        every try recorded (and audited). The cookie's path is `/`: one login serves every mounted page."""
        form = await request.form()
        username, password = str(form.get("username", "")).strip(), str(form.get("password", ""))
        address = request.client.host if request.client else ""
        name = username[:MAX_USERNAME_CHARS] if username.isprintable() else repr(username)[:MAX_USERNAME_CHARS]
        t = store.throttle
        left = await anyio.to_thread.run_sync(lambda: login_cooldown_left(
            store.db, name, address, max_failures=t.max_failures, window_seconds=t.window_s,
            cooldown_seconds=t.cooldown_s))
        if left > 0:
            raise HTTPException(status_code=429, detail=f"Too many failed logins: try again in "
                                                        f"{max(1, math.ceil(left / 60))} min.")
        ok = login_form_ok(username, password) and (
            await anyio.to_thread.run_sync(authenticate, store.db, username, password)) is not None
        await anyio.to_thread.run_sync(record_login_attempt, store.db, name, address, ok)
        if not ok:
            raise HTTPException(status_code=400, detail="Incorrect credentials.")
        token = secrets.token_urlsafe(16)
        try:
            store[token] = username
        except KeyError:
            raise HTTPException(status_code=400, detail="Incorrect credentials.") from None
        response = JSONResponse(content={"success": True})
        response.set_cookie(key=f"access-token-{store.cookie_id}", value=token, httponly=True, samesite="none",
                            secure=True)
        response.set_cookie(key=f"access-token-unsecure-{store.cookie_id}", value=token, httponly=True)
        return response

    return login


def install_sessions(server: Any, store: SessionStore, mounted: Iterable[tuple[str, Any, str]]) -> None:  # noqa: ANN401
    """Share `store` among the Gradio apps mounted on `server` (a FastAPI app), given as (mount path,
    Gradio app, page title): each app's login dict becomes `store` and its cookie id the database's,
    and our login and logout (throttled, audited, ending the session in the database) answer at each
    app's `login` and `logout` in front of Gradio's own. Each page's HTML carries its title (Gradio's
    login page has none, which screen readers need to name the tab). Call after mounting, before serving."""
    ours = []
    for path, app, title in mounted:
        app.tokens = store
        app.cookie_id = store.cookie_id
        prefix = path.rstrip("/")
        for route in app.router.routes:
            if getattr(route, "path", None) == "/" and "GET" in getattr(route, "methods", ()):
                route.app = _titled(route.app, title)
        ours += [APIRoute(f"{prefix}/logout", _logout_route(server, store, f"{prefix}/logout"), methods=["GET"])]
        ours += [APIRoute(f"{prefix}{login}", _login_route(store), methods=["POST"]) for login in ("/login", "/login/")]
    server.router.routes[:0] = ours  # before the mounts, which would otherwise answer first


def _titled(asgi: Any, title: str) -> Callable[..., Awaitable[None]]:  # noqa: ANN401 - an ASGI app
    """`asgi` with `<title>` put into an HTML answer that has none (Gradio's page template leaves the
    title to its script, which the login form never runs)."""
    tag = f"<title>{html.escape(title)}</title>".encode()

    async def app(scope: dict, receive: Callable, send: Callable) -> None:
        start: dict = {}
        chunks: list[bytes] = []

        async def capture(message: dict) -> None:
            if message["type"] == "http.response.start":
                start.update(message)
                return
            if message["type"] != "http.response.body":
                await send(message)
                return
            chunks.append(message.get("body", b""))
            if message.get("more_body"):
                return
            body, headers = b"".join(chunks), list(start.get("headers", []))
            if b"text/html" in dict(headers).get(b"content-type", b"") and b"<title>" not in body:
                body = body.replace(b"<head>", b"<head>" + tag, 1)
            headers = [(k, v) for k, v in headers if k.lower() != b"content-length"]
            await send({**start, "headers": [*headers, (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})

        await asgi(scope, receive, capture)

    return app


def current_user(store: SessionStore, db: Database, request: gr.Request | None) -> SessionUser | Annotator:
    """The logged-in user of an annotation event, from the session lookup Gradio just made (cached).
    Whether the account is still active is checked again inside the event's own transaction."""
    username = getattr(request, "username", None) if request is not None else None
    if not username:
        raise gr.Error("Not logged in.", print_exception=False)
    return store.user_named(username) or require_user(db, request)


def require_user(db: Database, request: gr.Request | None, role: str | None = None) -> Annotator:
    """The logged-in user, re-read from the database: must exist, be active and, when `role` is
    given, hold it. Raises `gr.Error` (shown to the page and to API clients). For operator events."""
    username = getattr(request, "username", None) if request is not None else None
    if not username:
        raise gr.Error("Not logged in.", print_exception=False)
    user = get_annotator(db, username)
    if user is None or not user.active:
        raise gr.Error("This account is disabled or no longer exists.", print_exception=False)
    if role is not None and user.role != role:
        raise gr.Error(f"Only {role}s may do this.", print_exception=False)
    return user
