"""The operator console's "Reward functions" panel: in Chromium an operator sees the configured functions and each
reward component's curve per policy step and per version; through the API an annotator is refused."""

from __future__ import annotations

from pathlib import Path

import pytest
from browser_utils import PASSWORD, login, open_console, start_app
from gradio_client import Client
from gradio_client.exceptions import AppError

import storage
from rlhf_core.config import RewardFunctionConfig, dump_config
from rlhf_core.workspace import init_workspace

pytestmark = [pytest.mark.filterwarnings("ignore:.*no_silent_downcasting", "ignore:The copy keyword is deprecated")]


@pytest.fixture
def rewards_app(tmp_path: Path):  # noqa: ANN201
    ws, _ = init_workspace(tmp_path / "ws")
    ws.config.loop.mode = "verifiable"
    ws.config.reward.functions = [RewardFunctionConfig(kind="answer_match", column="answer", weight=2.0),
                                  RewardFunctionConfig(kind="format_regex", pattern="^<a>", name="format")]
    (ws.root / "rlhf.toml").write_text(dump_config(ws.config), encoding="utf-8")
    running = start_app(ws.root, users={"olga": "operator", "alice": "annotator"})
    job = storage.enqueue_job(running.db, "round", {})
    storage.add_training_logs(running.db, phase="policy", job_id=job.id, rows=[
        {"step": s, "reward_mean": 0.1 * s, "rewards/answer_match": 0.2 + 0.1 * s, "rewards/format": 0.5}
        for s in range(3)])
    for version in (1, 2):
        storage.add_policy_version(running.db, parent_id=version - 1, adapter_path=f"/nowhere/{version}",
                                   algorithm="grpo", round=version,
                                   metrics={"rewards/answer_match": 0.3 * version, "rewards/format": 0.5})
    yield running
    running.close()


def test_the_panel_through_the_api_and_an_annotator_refused(rewards_app) -> None:
    olga = Client(rewards_app.operator_url, auth=("olga", PASSWORD), verbose=False, analytics_enabled=False)
    summary, table, steps, versions = olga.predict(api_name="/reward_functions")
    assert "loop.mode = `verifiable`, reward.combine = `sum`. Per-step curves: training job #1." in summary
    assert table["value"]["data"] == [["answer_match", "answer_match", 2.0, "answer"],
                                      ["format", "format_regex", 1.0, ""]]
    points = {(row[0], row[1]) for row in steps["value"]["data"]}
    assert points == {(s, c) for s in ("1", "2", "3") for c in ("answer_match", "format")}
    assert {(row[0], row[1]) for row in versions["value"]["data"]} == {
        (v, c) for v in ("v1", "v2") for c in ("answer_match", "format")}
    alice = Client(rewards_app.operator_url, auth=("alice", PASSWORD), verbose=False, analytics_enabled=False)
    with pytest.raises(AppError, match="Only operators"):
        alice.predict(api_name="/reward_functions")


@pytest.mark.browser
def test_an_operator_sees_the_functions_and_their_curves(rewards_app, page) -> None:  # noqa: ANN001
    playwright_api = pytest.importorskip("playwright.sync_api")
    login(page, rewards_app.url, "olga")
    open_console(page)
    page.locator("#reward-functions").get_by_text("Reward functions").first.click()
    summary = page.locator("#reward-functions-summary")
    summary.get_by_text("Per-step curves: training job #1").wait_for(timeout=20_000)
    table = page.locator("#reward-functions-table")
    for cell in ("answer_match", "format_regex"):
        playwright_api.expect(table.locator(f"text={cell} >> visible=true").first).to_be_visible()
    for chart in ("#reward-components-steps", "#reward-components-versions"):
        playwright_api.expect(page.locator(chart)).to_be_visible()
        page.locator(f"{chart} canvas, {chart} svg").first.wait_for(timeout=20_000)
