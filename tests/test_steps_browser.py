"""Step labeling in Chromium: in a workspace whose prompt set is labeled by steps, an annotator logs in and labels
every step of a response from the keyboard alone (G/N/B, Enter), marks the first wrong step of the next (J, F,
Enter), the labels are stored as the server cut the steps, the pair view returns when no response waits, and
axe-core finds no serious or critical problem on the step view."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from browser_utils import PAIR_SHOWN, PASSWORD, RunningApp, add_pairs, login, start_app

import storage
from rlhf_core.config import dump_config
from rlhf_core.workspace import init_workspace

pytestmark = pytest.mark.browser
playwright_api = pytest.importorskip("playwright.sync_api")

FIRST = "3 + 4 = 7\n7 * 2 = 14\nAnswer: 14"
SECOND = "2 + 2 = 4\n4 * 3 = 13\n13 - 1 = 12\nAnswer: 12"
STEP_VIEW = "#step-row-1 input[type=radio]"


@pytest.fixture
def app(tmp_path: Path):  # noqa: ANN201
    ws, _ = init_workspace(tmp_path / "ws")
    ws.config.labeling.step_sets = ["arith.jsonl"]
    ws.config_path.write_text(dump_config(ws.config), encoding="utf-8")
    running = start_app(tmp_path / "ws", users={"alice": "annotator"})
    db = running.db
    storage.add_prompts(db, [[{"role": "user", "content": "Start at 3, add 4, double it."}]], source="arith.jsonl")
    (prompt,) = storage.list_prompts(db)
    storage.record_generations(db, prompt_id=prompt.id, policy_version_id=0, responses=[(FIRST, 9), (SECOND, 12)],
                               gen_params={}, pairs=[(0, 1)])
    yield running
    running.close()


def _step_texts(page) -> list[str]:  # noqa: ANN001
    return [t.strip() for t in page.locator("#steps-area .step-row:visible .step-text").all_inner_texts()]


def _wait_for_response(page, text: str) -> None:  # noqa: ANN001
    page.wait_for_function("t => [...document.querySelectorAll('#steps-area .step-text')]"
                           ".map(e => e.textContent).join('\\n') === t", arg=text, timeout=10_000)


def test_an_annotator_labels_steps_from_the_keyboard_alone(app: RunningApp, page) -> None:  # noqa: ANN001
    add_pairs(app.db, [("a pair for later", "another answer")])  # served once no response waits for steps
    page.goto(app.url)
    page.get_by_label("username").focus()
    page.keyboard.type("alice")
    page.keyboard.press("Tab")
    page.keyboard.type(PASSWORD)
    page.keyboard.press("Enter")
    page.wait_for_selector(STEP_VIEW)
    _wait_for_response(page, FIRST)
    assert page.locator("#pair-area").is_hidden()
    page.wait_for_function("() => !!document.activeElement.closest('#step-row-1')")  # focus starts at step 1
    for key in ("g", "n", "b"):
        page.keyboard.press(key)
    assert page.locator("#step-3 input[value=bad]").is_checked()
    page.keyboard.press("Enter")
    _wait_for_response(page, SECOND)
    (row,) = storage.step_label_rows(app.db)
    assert (row.steps, row.labels, row.first_wrong) == (FIRST.splitlines(), ["good", "neutral", "bad"], None)

    page.wait_for_function("() => !!document.activeElement.closest('#step-row-1')")  # a new response: step 1
    page.keyboard.press("j")  # to step 2, then "this is the first wrong step"
    page.keyboard.press("f")
    page.wait_for_function("() => document.querySelector('#step-2 input[value=bad]').checked")
    assert page.locator("#step-1 input[value=good]").is_checked()
    assert not page.locator("#step-3 input:checked").count()
    page.keyboard.press("Enter")
    page.wait_for_selector(PAIR_SHOWN, state="visible")  # nothing waits for step labels: pairs again
    assert page.locator("#steps-area").is_hidden()
    second = storage.step_label_rows(app.db)[1]
    assert (second.labels, second.first_wrong) == (["good", "bad", None, None], 2)
    assert [e.actor for e in storage.audit_events(app.db) if e.action == "step_labels"] == ["alice", "alice"]


def test_saving_with_a_step_left_open_is_refused_and_keeps_the_labels(app: RunningApp, page) -> None:  # noqa: ANN001
    login(page, app.url, "alice")
    page.wait_for_selector(STEP_VIEW)
    _wait_for_response(page, FIRST)
    page.locator("#step-1 label", has_text="good").click()
    page.locator("#step-3 label", has_text="good").click()
    page.get_by_role("button", name="Save step labels").click()
    page.get_by_text("step 2 has no label").wait_for()
    assert page.locator("#step-1 input[value=good]").is_checked()
    assert storage.step_label_rows(app.db) == []
    assert _step_texts(page) == FIRST.splitlines()


def test_a_screen_answered_late_does_not_wipe_the_labels_begun(app: RunningApp, page, monkeypatch) -> None:  # noqa: ANN001
    """The page's load and its first check for work both ask for the response to label; when one answer comes
    late (a loaded server), it must not send the same response again and clear the steps already labeled."""
    import labeling_app.steps as steps_module

    original, calls, late_done = steps_module.StepLabeling.next_task, [], threading.Event()

    def next_task(self, user):  # noqa: ANN001, ANN202
        calls.append(user.username)
        if len(calls) == 1:
            time.sleep(3)
            found = original(self, user)
            late_done.set()
            return found
        return original(self, user)

    monkeypatch.setattr(steps_module.StepLabeling, "next_task", next_task)
    login(page, app.url, "alice")
    page.wait_for_selector(STEP_VIEW)
    _wait_for_response(page, FIRST)
    page.locator("#step-1 label", has_text="good").click()
    assert late_done.wait(15), "the delayed screen never answered"
    page.wait_for_timeout(1000)  # its answer reaches the page
    assert len(calls) >= 2
    assert page.locator("#step-1 input[value=good]").is_checked()
    page.locator("#step-2 label", has_text="bad").click()
    page.get_by_role("button", name="Save step labels").click()
    _wait_for_response(page, SECOND)
    (row,) = storage.step_label_rows(app.db)
    assert row.labels == ["good", "bad", None]


def test_axe_finds_no_serious_problem_on_the_step_view(app: RunningApp, page) -> None:  # noqa: ANN001
    axe_api = pytest.importorskip("axe_playwright_python.sync_playwright")
    axe = axe_api.Axe()
    login(page, app.url, "alice")
    page.wait_for_selector(STEP_VIEW)
    _wait_for_response(page, FIRST)
    page.keyboard.press("g")
    page.locator("#step-1 input[value=good]").wait_for(state="attached")
    page.wait_for_timeout(600)  # the theme's selected colours fade in; axe reads the settled page
    results = axe.run(page)
    serious = [f"{v['id']} ({v['impact']}): {v['help']} at {[n['target'] for n in v['nodes']][:4]}"
               for v in results.response["violations"] if v["impact"] in ("serious", "critical")]
    assert serious == []
