"""Accounts in a real browser: a disabled annotator's open page is refused on its next click (no
judgment written, the pair's lease released), and the operator page shows the latest audit rows,
including the round the operator just started."""

from __future__ import annotations

import time

import pytest
from browser_utils import LEFT_RAW, PAIR_SHOWN, RunningApp, add_pairs, login, open_console
from sqlmodel import func, select

from rlhf_core.simulator.simulate import simulate_annotators
from storage import Lease, judgment_rows, record_audit, set_active

pytestmark = [
    pytest.mark.browser,
    # Gradio's queue builds Dataframe payloads with pandas options pandas 3 deprecates; not ours to fix.
    pytest.mark.filterwarnings("ignore:.*no_silent_downcasting", "ignore:The copy keyword is deprecated"),
]

playwright_api = pytest.importorskip("playwright.sync_api")


def _leases(app: RunningApp) -> int:
    with app.db.session() as s:
        return s.exec(select(func.count()).select_from(Lease)).one()


def test_a_disabled_annotators_open_page_is_refused_on_the_next_click(app: RunningApp, page) -> None:  # noqa: ANN001
    add_pairs(app.db, [(f"sample a of {i}", f"sample b of {i}") for i in range(3)])
    login(page, app.url, "alice")
    page.wait_for_selector(PAIR_SHOWN)
    assert _leases(app) == 1
    set_active(app.db, "alice", False)  # what `rlhf user disable alice` does
    assert _leases(app) == 0  # her pair is free for others at once
    left_before = page.locator(LEFT_RAW).text_content()
    page.click("#btn-left")
    time.sleep(3.0)  # the click's event has long answered: refused (account disabled, session ended)
    assert judgment_rows(app.db) == [] and _leases(app) == 0
    assert "Saved" not in page.locator("#notice").inner_text()
    assert page.locator(LEFT_RAW).text_content() == left_before  # no next pair served


def test_operator_page_shows_the_latest_audit_rows(app: RunningApp, page) -> None:  # noqa: ANN001
    record_audit(app.db, "cli:root", "user_disable", user="bob")
    add_pairs(app.db, [(f"short {i}", f"a much longer answer number {i}") for i in range(4)])
    simulate_annotators(app.db, annotators=2, judgments=4, gold="longer", seed=0, progress=False)
    login(page, app.url, "olga")
    open_console(page)
    assert any("cli:root" in r for r in _audit_rows_with(page, "user_disable"))
    page.click("#btn-start-round")
    rows = _audit_rows_with(page, "start_round")
    assert len(rows) == 1 and "olga" in rows[0]


def _audit_rows_with(page, action: str, timeout_s: float = 15.0) -> list[str]:  # noqa: ANN001
    """The audit table's row texts naming `action`, once there is one (polled: the table fills in)."""
    deadline = time.monotonic() + timeout_s
    while True:
        rows = [r for r in page.locator("#audit [role=row]").all_inner_texts() if action in r]
        if rows or time.monotonic() > deadline:
            return rows
        time.sleep(0.3)
