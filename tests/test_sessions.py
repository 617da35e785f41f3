"""Login sessions in the database (SQLite, then PostgreSQL): tokens stored hashed, expiry, logout,
ending every session of a user, disabled users, the app's cached lookups, the shared cookie name."""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path

import pytest
from sqlmodel import select, update

from labeling_app.auth import SessionStore, cookie_id, login_form_ok
from storage import (
    Database,
    LoginSession,
    create_annotator,
    end_session,
    end_sessions_of,
    open_session_count,
    session_user,
    set_active,
    start_session,
    utcnow,
)

HOUR = 3600.0


def test_a_session_is_stored_hashed_and_found_by_its_token(db: Database) -> None:
    user = create_annotator(db, "alice", "password123", role="operator")
    found = start_session(db, "alice", "secret-token", lifetime_s=HOUR)
    assert (found.id, found.username, found.role) == (user.id, "alice", "operator")
    assert session_user(db, "secret-token") == found
    assert session_user(db, "other-token") is None and session_user(db, "") is None
    with db.session() as s:
        (row,) = s.exec(select(LoginSession)).all()
    assert row.token_hash != "secret-token" and len(row.token_hash) == 64  # a copy of the table logs nobody in
    assert start_session(db, "nobody", "t2", lifetime_s=HOUR) is None


def test_expired_ended_and_disabled_sessions_are_not_valid(db: Database) -> None:
    create_annotator(db, "alice", "password123")
    create_annotator(db, "bob", "password123")
    for token in ("expiring", "logged-out", "alice-2"):
        start_session(db, "alice", token, lifetime_s=HOUR)
    start_session(db, "bob", "bob-1", lifetime_s=HOUR)
    with db.session() as s:
        s.exec(update(LoginSession).where(LoginSession.id == 1).values(expires_at=utcnow() - timedelta(seconds=1)))
    assert session_user(db, "expiring") is None
    assert end_session(db, "logged-out") is True and end_session(db, "logged-out") is False
    assert session_user(db, "logged-out") is None
    assert session_user(db, "alice-2") is not None
    set_active(db, "alice", False)
    assert session_user(db, "alice-2") is None  # a disabled account's sessions stop at once
    set_active(db, "alice", True)
    assert session_user(db, "alice-2") is None and open_session_count(db, "alice") == 0  # disabling ended it


def test_end_all_sessions_of_a_user(db: Database) -> None:
    create_annotator(db, "alice", "password123")
    create_annotator(db, "bob", "password123")
    for token in ("a1", "a2", "a3"):
        start_session(db, "alice", token, lifetime_s=HOUR)
    start_session(db, "bob", "b1", lifetime_s=HOUR)
    end_session(db, "a3")
    assert end_sessions_of(db, "alice", reason="account review") == 2  # a3 had already ended
    assert [session_user(db, t) for t in ("a1", "a2", "a3")] == [None, None, None]
    assert session_user(db, "b1") is not None
    assert end_sessions_of(db, "nobody") == 0
    with db.session() as s:
        reasons = sorted(r.end_reason for r in s.exec(select(LoginSession)).all() if r.end_reason)
    assert reasons == ["account review", "account review", "logout"]


def test_the_store_is_gradios_token_dict_kept_in_the_database(db: Database) -> None:
    create_annotator(db, "alice", "password123")
    here, there = SessionStore(db, lifetime_s=HOUR, cache_seconds=0.3), SessionStore(db, lifetime_s=HOUR)
    here["tok"] = "alice"  # what Gradio does after a good login
    assert there.get("tok") == "alice" and "tok" in there  # another process finds it
    assert there.get("unknown") is None
    assert there.user_named("alice").username == "alice"
    del there["tok"]  # logout through the other process
    assert there.get("tok") is None
    assert here.get("tok") == "alice"  # this process trusts its cached look ...
    time.sleep(0.35)
    assert here.get("tok") is None  # ... for cache_seconds only
    with pytest.raises(KeyError):
        here["tok"]


def test_disabled_between_password_check_and_session_start(db: Database) -> None:
    create_annotator(db, "alice", "password123")
    set_active(db, "alice", False)
    store = SessionStore(db, lifetime_s=HOUR)
    with pytest.raises(KeyError):
        store["tok"] = "alice"
    assert open_session_count(db, "alice") == 0


def test_every_process_on_one_database_names_the_cookie_alike(tmp_path: Path) -> None:
    a, b = Database(f"sqlite:///{tmp_path / 'x.db'}"), Database(f"sqlite:///{tmp_path / 'sub' / '..' / 'x.db'}")
    other = Database(f"sqlite:///{tmp_path / 'y.db'}")
    pg_1 = Database("postgresql://alice:pw1@db.example:5432/rlhf")
    pg_2 = Database("postgres://bob:pw2@db.example/rlhf")
    assert cookie_id(a) == cookie_id(b) != cookie_id(other)
    assert cookie_id(pg_1) == cookie_id(pg_2) != cookie_id(Database("postgresql://alice@db.example/other"))
    assert "pw" not in pg_1.identity()
    for d in (a, b, other, pg_1, pg_2):
        d.dispose()


@pytest.mark.parametrize(("username", "password", "ok"), [
    ("alice", "password123", True),
    ("", "password123", False),
    ("al\x00ice", "x", False),
    ("alice\n", "x", False),
    ("a" * 65, "x", False),
    ("alice", "x" * 1025, False),
    ("alice", "pass\x00", False),
    ("名前", "密码密码密码", True),
])
def test_login_form_checks(username: str, password: str, ok: bool) -> None:
    assert login_form_ok(username, password) is ok


@pytest.mark.browser
def test_log_out_button_ends_the_session_for_every_tab(tmp_path: Path, browser) -> None:  # noqa: ANN001
    from browser_utils import PAIR_SHOWN, add_pairs, login, start_app

    app = start_app(tmp_path / "ws", users={"alice": "annotator"})
    try:
        add_pairs(app.db, [("sample a", "sample b")])
        context = browser.new_context()
        page = context.new_page()
        page.set_default_timeout(15_000)
        login(page, app.url, "alice")
        page.wait_for_selector(PAIR_SHOWN)
        cookies = context.cookies()
        assert open_session_count(app.db, "alice") == 1
        page.get_by_text("Log out", exact=True).click()
        page.get_by_label("username").wait_for()
        assert open_session_count(app.db, "alice") == 0
        other_tab = browser.new_context()  # still holding the old cookie
        other_tab.add_cookies(cookies)
        stale = other_tab.new_page()
        stale.goto(app.url)
        stale.get_by_label("username").wait_for()  # the login form, not the page
        assert stale.locator("#response-left").count() == 0
        other_tab.close()
        context.close()
    finally:
        app.close()
