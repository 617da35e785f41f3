"""Accounts people can trust, in storage (SQLite, then PostgreSQL): the login throttle's counters in
the database (shared by every process), the account lifecycle ending sessions and releasing leases,
bad usernames and roles refused with nothing written, and the audit log's filters."""

from __future__ import annotations

from datetime import timedelta

import pytest
from browser_utils import add_pairs
from sqlmodel import func, select, update

from storage import (
    Annotator,
    AuditEvent,
    Database,
    Lease,
    LoginAttempt,
    UserError,
    audit_events,
    authenticate,
    create_annotator,
    login_cooldown_left,
    next_pair_for,
    record_audit,
    record_login_attempt,
    session_user,
    set_active,
    set_password,
    set_role,
    start_session,
    utcnow,
)

LIMITS = {"max_failures": 3, "window_seconds": 60.0, "cooldown_seconds": 120.0}


def left(db: Database, user: str = "alice", address: str = "10.0.0.1") -> float:
    return login_cooldown_left(db, user, address, **LIMITS)


def test_failures_per_username_and_per_address_start_a_cooldown(db: Database) -> None:
    for _ in range(2):
        record_login_attempt(db, "alice", "10.0.0.1", ok=False)
    assert left(db) == 0.0  # under N: may still try
    record_login_attempt(db, "alice", "10.0.0.9", ok=False)  # the third failure, from elsewhere
    assert 110 < left(db, address="10.0.0.7") <= 120  # the username is blocked whatever the address
    assert left(db, user="bob", address="10.0.0.2") == 0.0
    for name in ("u1", "u2", "u3"):  # one address guessing several names
        record_login_attempt(db, name, "10.0.0.5", ok=False)
    assert left(db, user="carol", address="10.0.0.5") > 0


def test_old_failures_and_spread_out_failures_do_not_block(db: Database) -> None:
    for minutes in (10, 5, 0):  # three failures, but not within one 60 s window
        record_login_attempt(db, "alice", "10.0.0.1", ok=False)
        with db.session() as s:
            s.exec(update(LoginAttempt).where(LoginAttempt.id == s.exec(select(func.max(LoginAttempt.id))).one())
                   .values(created_at=utcnow() - timedelta(minutes=minutes)))
    assert left(db) == 0.0
    with db.session() as s:  # three within the window, but the cool-down is over
        s.exec(update(LoginAttempt).values(created_at=utcnow() - timedelta(seconds=200)))
    assert left(db) == 0.0


def test_two_database_handles_share_the_counters(db: Database) -> None:
    """Two app processes are two engines on one database: failures counted by one block the other."""
    other = Database(db.url)
    try:
        for handle in (db, other, db):
            record_login_attempt(handle, "alice", "10.0.0.1", ok=False)
        assert left(other) > 0 and left(db) > 0
    finally:
        other.dispose()


def test_every_attempt_is_recorded_and_audited(db: Database) -> None:
    record_login_attempt(db, "alice", "10.0.0.1", ok=False)
    record_login_attempt(db, "alice", "10.0.0.1", ok=True)
    assert [(e.actor, e.action, e.address) for e in audit_events(db)] == [
        ("alice", "login", "10.0.0.1"), ("alice", "login_failed", "10.0.0.1")]


def test_disable_ends_sessions_and_releases_the_lease(db: Database) -> None:
    create_annotator(db, "alice", "password123")
    add_pairs(db, [("a", "b")])
    start_session(db, "alice", "tok", lifetime_s=3600)
    alice = authenticate(db, "alice", "password123")
    assert next_pair_for(db, alice.id) is not None
    assert set_active(db, "alice", False) == 1
    with db.session() as s:
        assert s.exec(select(func.count()).select_from(Lease)).one() == 0  # the pair is free again
    assert authenticate(db, "alice", "password123") is None
    set_active(db, "alice", True)
    assert session_user(db, "tok") is None  # enabling does not revive the ended session


def test_password_and_role_changes_end_sessions(db: Database) -> None:
    create_annotator(db, "alice", "password123")
    start_session(db, "alice", "t1", lifetime_s=3600)
    with pytest.raises(UserError, match="at least 12"):
        set_password(db, "alice", "short-pass1", min_password_length=12)
    assert session_user(db, "t1") is not None  # a refused change ends nothing
    assert set_password(db, "alice", "a-new-password", min_password_length=12) == 1
    assert authenticate(db, "alice", "password123") is None and authenticate(db, "alice", "a-new-password")
    start_session(db, "alice", "t2", lifetime_s=3600)
    assert set_role(db, "alice", "operator") == 1 and session_user(db, "t2") is None
    assert authenticate(db, "alice", "a-new-password").role == "operator"
    with pytest.raises(UserError, match="no user named"):
        set_role(db, "nobody", "operator")


@pytest.mark.parametrize(("name", "role", "password", "message"), [
    ("a\x07b", "annotator", "password123", "control characters"),
    ("tab\there", "annotator", "password123", "control characters"),
    ("x" * 65, "annotator", "password123", "1-64"),
    ("carol", "admin", "password123", "role must be one of"),
    ("carol", "annotator", "short", "at least 8"),
])
def test_bad_accounts_are_refused_and_nothing_is_written(db: Database, name: str, role: str, password: str,
                                                         message: str) -> None:
    with pytest.raises(UserError, match=message):
        create_annotator(db, name, password, role)
    with db.session() as s:
        assert s.exec(select(func.count()).select_from(Annotator)).one() == 0
    create_annotator(db, "dave", "password123")
    with pytest.raises(UserError, match="role must be one of"):
        set_role(db, "dave", "root")
    assert authenticate(db, "dave", "password123").role == "annotator"


def test_audit_filters_by_time_actor_and_action(db: Database) -> None:
    record_audit(db, "olga", "export", address="10.0.0.3", format="hf", rows=12)
    record_audit(db, "cli:root", "user_disable", user="bob")
    with db.session() as s:
        s.exec(update(AuditEvent).where(AuditEvent.actor == "olga").values(created_at=utcnow() - timedelta(days=2)))
    record_audit(db, "olga", "start_round", job=3)
    assert [e.action for e in audit_events(db, actor="olga")] == ["start_round", "export"]
    assert [e.action for e in audit_events(db, since=utcnow() - timedelta(days=1))] == ["start_round", "user_disable"]
    (export,) = audit_events(db, action="export")
    assert (export.actor, export.address, export.params) == ("olga", "10.0.0.3", {"format": "hf", "rows": 12})
    assert len(audit_events(db, limit=1)) == 1
