"""The operator console in a real browser, on a tiny model with a worker running: an operator follows the
labeling page's link to the console, starts a GRPO round, watches the job go to done, sees policy v1 under
Rounds, and goes back to labeling; an annotator gets no link, sees one sentence and no data at /operator/, and
cannot start a round from their logged-in browser session."""

from __future__ import annotations

import json
import os
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from browser_utils import PASSWORD, free_port, login, open_console

import storage
from labeling_app import ServedApp, serve
from rlhf_core.loop.worker import Worker
from rlhf_core.simulator.simulate import simulate_annotators
from rlhf_core.workspace import Workspace, init_workspace

pytestmark = [
    pytest.mark.browser,
    # Gradio's queue builds Dataframe payloads with pandas options pandas 3 deprecates; not ours to fix.
    pytest.mark.filterwarnings("ignore:.*no_silent_downcasting", "ignore:The copy keyword is deprecated"),
]

playwright_api = pytest.importorskip("playwright.sync_api")

ROUND_TIMEOUT_S = 180
# Set to a file path to keep a screenshot of the console after the round (for a visual check).
SCREENSHOT_ENV = "RLHF_OPERATOR_SCREENSHOT"


@dataclass
class LoopApp:
    ws: Workspace
    db: storage.Database
    served: ServedApp

    @property
    def url(self) -> str:
        return self.served.url


@pytest.fixture(scope="module")
def loop_app(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path, tiny_rounds) -> Iterator[LoopApp]:
    ws, _ = init_workspace(tmp_path_factory.mktemp("operator") / "ws", model=str(tiny_model_dir))
    tiny_rounds(ws.config)
    ws.config.labeling.judgments_per_pair = 2  # overlap, so the page has a kappa to show
    db = ws.database()
    storage.add_prompts(db, [[{"role": "user", "content": f"say something about item {i}"}] for i in range(12)])
    storage.create_annotator(db, "olga", PASSWORD, role="operator")
    storage.create_annotator(db, "alice", PASSWORD, role="annotator")
    worker_db = ws.database()  # its own engine, as a separate worker process would have
    worker = Worker(ws, worker_db, poll_seconds=0.2)
    sampled = worker.run_until_done(storage.enqueue_job(db, "sample", {"pairs": 12}).id, timeout=300)
    assert sampled.status == "done", sampled.error
    simulate_annotators(db, annotators=3, judgments=24, gold="longer", noise=0.2, seed=1, progress=False)

    stop = threading.Event()
    thread = threading.Thread(target=worker.run_forever, args=(stop,), name="test-worker", daemon=True)
    thread.start()
    served = serve(ws, db, None, port=free_port(), block=False, quiet=True)
    try:
        yield LoopApp(ws=ws, db=db, served=served)
    finally:
        stop.set()
        thread.join(timeout=ROUND_TIMEOUT_S)
        served.close()
        worker_db.dispose()
        db.dispose()


def _table_rows(page, elem_id: str) -> list[list[str]]:  # noqa: ANN001
    """The body rows of a gr.Dataframe (a virtual table: rows and cells are ARIA grid roles)."""
    rows = page.locator(f"#{elem_id} [role=row]").all()
    cells = [[c.strip() for c in row.locator("[role=gridcell]").all_inner_texts()] for row in rows]
    return [row for row in cells if row]


def _job_status(page, job_id: int) -> str | None:  # noqa: ANN001
    """The status cell of job `job_id` in the page's jobs table, or None while it is not listed."""
    return next((row[2] for row in _table_rows(page, "jobs") if row[0] == f"#{job_id}"), None)


def test_annotator_sees_no_console_and_cannot_start_a_round(loop_app: LoopApp, page) -> None:  # noqa: ANN001
    login(page, loop_app.url, "alice")
    page.locator("#whoami").get_by_text("alice").wait_for()
    assert page.locator("#btn-left").count() == 1 and not page.locator("#link-operator").is_visible()
    page.goto(f"{loop_app.url}operator")  # typed in by hand: one sentence, no console, no data
    refusal = page.locator("#operator-refusal")
    refusal.get_by_text("The operator console is for operators").wait_for()
    assert "alice" in refusal.inner_text() and "Labeling page" in refusal.inner_text()
    page.wait_for_timeout(1000)
    assert not page.locator("#operator").is_visible() and not page.locator("#pool-status").is_visible()
    assert "olga" not in page.content() and "Pairs open" not in page.content()
    jobs_before = len(storage.list_jobs(loop_app.db))
    # Her logged-in session calls the endpoints the operator's buttons use.
    for api_name, data in [("start_round", ["GRPO"]), ("create_eval_batch", [4]), ("operator_dashboard", [None])]:
        response = page.request.post(f"{loop_app.served.operator_url}gradio_api/run/{api_name}", data={"data": data})
        assert response.status == 500 and "Only operators" in response.text(), api_name
    assert len(storage.list_jobs(loop_app.db)) == jobs_before
    page.locator("#link-labeling").click()
    page.locator("#btn-left").wait_for(state="attached")


def test_operator_starts_a_grpo_round_and_sees_policy_v1(loop_app: LoopApp, page) -> None:  # noqa: ANN001
    login(page, loop_app.url, "olga")
    open_console(page)
    page.locator("#pool-status").get_by_text("v0 (base model)").wait_for()
    page.locator("#rounds-note").get_by_text("No rounds yet").wait_for()
    page.locator("#quality").get_by_text("Fleiss' kappa over a/b/tie/both_bad on pairs with ≥ 2 judgments").wait_for()

    playwright_api.expect(page.locator("#round-algo").get_by_text("DPO", exact=True)).to_be_visible()  # beside PPO
    page.locator("#round-algo").get_by_text("GRPO").click()
    page.click("#btn-start-round")
    page.locator("#sample-result").get_by_text("Queued round job").wait_for()
    job_id = int(re.search(r"#(\d+)", page.locator("#sample-result").inner_text()).group(1))
    job = storage.get_job(loop_app.db, job_id)
    assert job.kind == "round" and '"algo": "grpo"' in job.params_json

    # The timer refreshes the page: the job shows up, then reaches done, without a reload.
    seen: list[str] = []
    deadline = time.time() + ROUND_TIMEOUT_S
    while time.time() < deadline:
        status = _job_status(page, job_id)
        if status and (not seen or seen[-1] != status):
            seen.append(status)
        if status in ("done", "failed"):
            break
        page.wait_for_timeout(500)
    assert seen and seen[-1] == "done", (seen, storage.get_job(loop_app.db, job_id).error)

    page.locator("#rounds").get_by_text("v1").wait_for()
    assert [row[:2] for row in _table_rows(page, "rounds")] == [["v1", "grpo"], ["v0 (base)", "base"]]
    assert "v1" in page.locator("#pool-status").inner_text()
    playwright_api.expect(page.locator("#curve-job input")).to_have_value(f"#{job_id} round (grpo) · done")
    page.locator("#curve-policy-reward_mean canvas, #curve-policy-reward_mean svg").first.wait_for()
    assert "One trained version so far" in page.locator("#rounds-note").inner_text()  # a line needs two
    if os.environ.get(SCREENSHOT_ENV):
        page.wait_for_timeout(1000)
        page.screenshot(path=os.environ[SCREENSHOT_ENV], full_page=True)

    # The refresh timer runs while the console is open, and nothing of it once the operator goes back to labeling.
    tick = next(index for index, fn in loop_app.served.operator.fns.items() if fn.name == "tick")
    ticks: list[int] = []
    console_calls: list[str] = []
    page.on("request", lambda r: ticks.append(tick) if "/operator/gradio_api/run/" in r.url
            and (json.loads(r.post_data or "{}").get("fn_index") == tick) else None)
    page.on("request", lambda r: console_calls.append(r.url) if "/operator/" in r.url else None)
    page.wait_for_timeout(3500)
    assert ticks, "no refresh while the console is open"
    page.locator("#link-labeling").click()
    page.locator("#whoami").get_by_text("Signed in as olga").wait_for()
    assert page.locator("#link-operator").is_visible() and page.locator("#btn-refresh").count() == 0
    page.wait_for_timeout(500)
    console_calls.clear()
    page.wait_for_timeout(4000)
    assert console_calls == []
