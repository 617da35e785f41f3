"""Is the loop improving, in Chromium: the operator console shows each version's evidence (the Gao-style chart over
√KL with the proxy gains and the fresh accuracy, the alarm ringed, the rounds note led by the alarm), and its
Rollback makes an older version current, refuses an unknown one in a sentence, and writes the audit log."""

from __future__ import annotations

import pytest
from browser_utils import RunningApp, login, open_console

import storage
from rlhf_core.loop.evidence import judge_current_version

pytestmark = [
    pytest.mark.browser,
    pytest.mark.filterwarnings("ignore:.*no_silent_downcasting", "ignore:The copy keyword is deprecated"),
]
playwright_api = pytest.importorskip("playwright.sync_api")


def versions_with_evidence(app: RunningApp) -> str:
    """v1 confirmed, v2 whose proxy rose while its reward model fell to chance on its fresh pairs (an alarm)."""
    db = app.db
    storage.add_policy_version(db, parent_id=0, adapter_path="/a/v1", algorithm="grpo", round=1, metrics={
        "claimed_gain": 0.6, "rescored_gain": 0.5, "kl_base_per_token": 0.01,
        "fresh": {"right": 70, "n": 100, "accuracy": 0.7, "interval": [0.604, 0.781]}})
    storage.add_policy_version(db, parent_id=1, adapter_path="/a/v2", algorithm="grpo", round=2, metrics={
        "claimed_gain": 1.4, "kl_base_per_token": 0.09,
        "fresh": {"right": 45, "n": 100, "accuracy": 0.45, "interval": [0.355, 0.548]}})
    app.ws.config.loop.promote = "always"  # the alarm stands; the operator decides
    alarm, _ = judge_current_version(app.ws, db, storage.get_policy(db, 2))
    return alarm.reason


def test_the_console_shows_the_evidence_and_rolls_back(app: RunningApp, page) -> None:  # noqa: ANN001
    reason = versions_with_evidence(app)
    login(page, app.url, "olga")
    open_console(page)
    note = page.locator("#rounds-note")
    note.get_by_text("Over-optimization alarm on v2").wait_for()
    chart = page.locator("#evidence-chart svg.gao-chart")
    chart.wait_for()
    assert chart.locator("circle.point-claimed").count() == 2
    assert chart.locator("rect.point-fresh").count() == 2 and chart.locator("circle.alarm").count() == 1
    assert reason in chart.locator("circle.alarm title").text_content()

    version = page.locator("#rollback-version input")
    version.click()  # the choices the console's opening filled in: wait for them before typing
    page.locator("#rollback-version").get_by_role("option", name="v2 (current)").wait_for()
    version.press("Escape")
    version.fill("v9")
    version.press("Enter")
    page.locator("#btn-rollback").click()
    page.locator("#rollback-result").get_by_text("Not rolled back:").wait_for()
    assert "there is no policy version 9" in page.locator("#rollback-result").inner_text()
    assert storage.current_policy(app.db).id == 2

    version.fill("v1")
    version.press("Enter")
    page.locator("#btn-rollback").click()
    page.locator("#rollback-result").get_by_text("v1 is current").wait_for()
    assert storage.current_policy(app.db).id == 1
    (event,) = storage.audit_events(app.db, action="rollback")
    assert event.actor == "olga" and event.params["to"] == 1
    page.locator("#audit").get_by_text("rollback").first.wait_for()
