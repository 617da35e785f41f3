"""Accounts on the operator console (labeling_app/operator/accounts.py) through the console's API: the CLI's
rules, a generated password shown once, sessions ended, audit rows; anonymous callers refused too.
The browser flow (an operator adds a user who then logs in) is in tests/test_labeling_page_browser.py."""

from __future__ import annotations

import re

import httpx
import pytest
from browser_utils import PASSWORD, RunningApp
from gradio_client import Client
from gradio_client.exceptions import AppError

import storage

pytestmark = pytest.mark.filterwarnings("ignore:.*no_silent_downcasting", "ignore:The copy keyword is deprecated")


def client(app: RunningApp, user: str) -> Client:
    return Client(app.operator_url, auth=(user, PASSWORD), verbose=False, analytics_enabled=False,
                  download_files=False)


def shown_password(message: str) -> str:
    return re.search(r"password is `([^`]+)`", message).group(1)


def test_an_operator_adds_changes_and_disables_accounts_with_the_clis_rules(app: RunningApp) -> None:
    olga = client(app, "olga")
    message, _, users = olga.predict("carol", "annotator", api_name="/account_add")
    password = shown_password(message)
    assert "shown this once" in message and len(password) >= app.ws.config.auth.min_password_length
    assert storage.authenticate(app.db, "carol", password).role == "annotator"
    assert ["carol", "annotator", "yes"] in [row[:3] for row in users["data"]]

    for name, why in [("carol", "already exists"), ("", "1-64 characters"), ("x" * 65, "1-64 characters"),
                      ("bad\u0007name", "control characters")]:
        refused, _, _ = olga.predict(name, "annotator", api_name="/account_add")
        assert refused.startswith("Not added") and why in refused.replace("\\", ""), name  # Markdown-escaped
    with pytest.raises(AppError, match="not in the list of choices"):  # roles are the component's choices
        olga.predict("dave", "admin", api_name="/account_add")

    client(app, "alice")  # a session of alice's (made on the console, good on both pages), which her promotion ends
    assert storage.open_session_count(app.db, "alice") >= 1
    promoted, _, _ = olga.predict("alice", "operator", api_name="/account_set_role")
    assert "is now operator" in promoted and storage.open_session_count(app.db, "alice") == 0
    reset, _, _ = olga.predict("carol", "annotator", api_name="/account_reset_password")
    new_password = shown_password(reset)
    assert new_password != password and storage.authenticate(app.db, "carol", password) is None
    assert storage.authenticate(app.db, "carol", new_password) is not None
    disabled, _, users = olga.predict("carol", "annotator", api_name="/account_disable")
    assert disabled.startswith("Disabled") and storage.authenticate(app.db, "carol", new_password) is None
    assert ["carol", "annotator", "no"] in [row[:3] for row in users["data"]]
    assert olga.predict("carol", "annotator", api_name="/account_enable")[0].startswith("Enabled")
    assert "no user named" in olga.predict("nobody", "annotator", api_name="/account_disable")[0]
    # The page will not lock its operator out.
    for own in ("/account_disable", "/account_set_role"):
        assert "your own account" in olga.predict("olga", "annotator", api_name=own)[0]
    assert storage.get_annotator(app.db, "olga").active and storage.get_annotator(app.db, "olga").role == "operator"

    audit = [(e.actor, e.action, e.params.get("user")) for e in reversed(storage.audit_events(app.db))
             if e.action.startswith("user_")]
    assert audit == [("olga", "user_add", "carol"), ("olga", "user_set_role", "alice"),
                     ("olga", "user_set_password", "carol"), ("olga", "user_disable", "carol"),
                     ("olga", "user_enable", "carol")]
    assert all(e.address == "127.0.0.1" for e in storage.audit_events(app.db, actor="olga"))


def test_anonymous_callers_cannot_reach_the_account_events(app: RunningApp) -> None:
    fns = {fn.name: (index, len(fn.inputs)) for index, fn in app.served.operator.fns.items()}
    names = [n for n in fns if (n or "").startswith("account_")]
    assert sorted(names) == ["account_add", "account_disable", "account_enable", "account_reset_password",
                             "account_set_role"]
    with httpx.Client(base_url=app.operator_url, timeout=30) as anonymous:
        for name in names:
            index, n_inputs = fns[name]
            answer = anonymous.post("gradio_api/run/predict",
                                    json={"fn_index": index, "data": ["eve", "operator"][:n_inputs],
                                          "session_hash": "anon"})
            assert answer.status_code in (401, 403, 500) and "password is" not in answer.text, name
    with pytest.raises((AppError, ValueError)):
        Client(app.operator_url, verbose=False, analytics_enabled=False).predict("eve", "operator",
                                                                               api_name="/account_add")
    assert storage.get_annotator(app.db, "eve") is None
    assert [e for e in storage.audit_events(app.db) if e.action.startswith("user_")] == []
