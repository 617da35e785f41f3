"""The "Write a better answer" panel in Chromium: a written answer is stored once on a double click, an edit of
a response yields the demonstration and the preference "edited > original", bad texts are refused with a
sentence, hostile text stays inert, the panel works from the keyboard, "every_n" shows it on every n-th pair,
and with "off" (the default) the page has no panel at all."""

from __future__ import annotations

from pathlib import Path

import pytest
from browser_utils import PAIR_SHOWN, RunningApp, add_pairs, free_port, login, shown_texts, wait_for_new_pair

from labeling_app import serve
from rlhf_core.workspace import init_workspace
from storage import audit_events, create_annotator, demonstration_counts, demonstration_rows, judgment_rows

pytestmark = pytest.mark.browser

playwright_api = pytest.importorskip("playwright.sync_api")
PASSWORD = "correct-horse-9"
PANEL = "#demo-panel"
STATUS = "#demo-status"


def start(root: Path, mode: str, every: int = 10) -> RunningApp:
    ws, _ = init_workspace(root)
    ws.config.labeling.demonstrations = mode
    ws.config.labeling.demonstration_every = every
    db = ws.database()
    create_annotator(db, "alice", PASSWORD)
    return RunningApp(ws=ws, db=db, served=serve(ws, db, port=free_port(), block=False, quiet=True))


@pytest.fixture
def optional_app(tmp_path: Path):  # noqa: ANN201
    running = start(tmp_path / "ws", "optional")
    yield running
    running.close()


def open_panel(page) -> None:  # noqa: ANN001
    page.wait_for_selector(PAIR_SHOWN)
    page.get_by_text("Write a better answer (optional)").click()
    page.get_by_label("Your answer").wait_for(state="visible")


def status_says(page, *words: str) -> None:  # noqa: ANN001
    """Wait until the panel's status says one of `words`."""
    try:
        page.wait_for_function("ws => ws.some(w => (document.querySelector('#demo-status')?.innerText || '')"
                               ".includes(w))", arg=list(words))
    except playwright_api.TimeoutError:
        pytest.fail(f"the panel says {page.locator(STATUS).inner_text()!r}, not {' or '.join(map(repr, words))}")


def test_written_once_on_a_double_click_and_an_edit_is_also_a_preference(optional_app: RunningApp, page) -> None:  # noqa: ANN001
    app = optional_app
    add_pairs(app.db, [("An apple a day.", "Bananas are yellow."), ("sample a of 2", "sample b of 2")])
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    login(page, app.url, "alice")
    open_panel(page)
    left, right = shown_texts(page)

    hostile = 'A mango. <img src=x onerror="alert(1)"> **bold** [x](javascript:alert(2))'
    page.get_by_label("Your answer").fill(hostile)
    page.get_by_role("button", name="Save answer").dblclick()
    # Either click's answer may be the last shown: the first saves, the second is told it is already saved.
    status_says(page, "Saved your answer to pair #", "Already saved: this answer to pair #")
    page.wait_for_timeout(500)  # the second click's answer too
    assert demonstration_counts(app.db)["demonstrations"] == 1  # stored once
    (row,) = demonstration_rows(app.db)
    assert (row.text, row.author, row.edited_sample_id) == (hostile, "alice", None)
    assert [e.actor for e in audit_events(app.db, action="demonstration")] == ["alice"]

    # Start from B: its raw text comes into the box; an edit saves the demonstration and the preference.
    page.get_by_role("button", name="Start from B").click()
    page.wait_for_function("t => document.querySelector('#demo-text textarea').value === t", arg=right)
    page.get_by_label("Your answer").press("End")
    page.get_by_label("Your answer").type(" Ripe ones are sweet.")
    page.get_by_role("button", name="Save answer").click()
    status_says(page, "Saved your edit of B")
    edits = demonstration_rows(app.db, edits_only=True)
    assert [(e.text, e.original_text) for e in edits] == [(right + " Ripe ones are sweet.", right)]

    # Bad texts: refused with a sentence, nothing stored.
    page.get_by_label("Your answer").fill("   ")
    page.get_by_role("button", name="Save answer").click()
    status_says(page, "Not saved: the answer is empty.")
    page.get_by_label("Your answer").fill("ring the bell \u0007 now")
    page.get_by_role("button", name="Save answer").click()
    status_says(page, "Not saved: the answer contains the control character U+0007")
    assert demonstration_counts(app.db)["demonstrations"] == 2

    # Keyboard only: "Start blank" (no longer an edit of B), type in the box, move to Save, press Enter; keys typed
    # in the box judge nothing.
    page.get_by_role("button", name="Start blank").focus()
    page.keyboard.press("Enter")
    status_says(page, "Blank: write your own answer.")
    assert page.get_by_label("Your answer").input_value() == ""
    page.get_by_label("Your answer").focus()
    page.keyboard.type("Typed with 1 2 3 in it.")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "btn-demo-save"
    page.keyboard.press("Enter")
    status_says(page, "Saved your answer")
    assert judgment_rows(app.db) == [] and demonstration_counts(app.db)["demonstrations"] == 3
    assert dialogs == []

    # Judging moves to the next pair, which starts with an empty answer.
    page.keyboard.press("Escape")
    page.click("#btn-left")
    wait_for_new_pair(page, left)
    page.wait_for_function("() => document.querySelector('#demo-text textarea').value === ''")
    assert page.locator(STATUS).inner_text().strip() == ""


def test_every_n_shows_the_panel_on_every_nth_pair(tmp_path: Path, page) -> None:  # noqa: ANN001
    app = start(tmp_path / "ws", "every_n", every=2)
    try:
        add_pairs(app.db, [(f"sample a of {i}", f"sample b of {i}") for i in range(3)])
        login(page, app.url, "alice")
        page.wait_for_selector(PAIR_SHOWN)
        page.wait_for_timeout(800)
        assert not page.locator(PANEL).is_visible()  # the 1st pair
        left, _ = shown_texts(page)
        page.click("#btn-left")
        wait_for_new_pair(page, left)
        page.get_by_label("Your answer").wait_for(state="visible")  # the 2nd: shown and open
        left, _ = shown_texts(page)
        page.click("#btn-right")
        wait_for_new_pair(page, left)
        page.wait_for_selector(PANEL, state="hidden")  # the 3rd
    finally:
        app.close()


def test_off_has_no_panel(app: RunningApp, page) -> None:  # noqa: ANN001 - conftest's app: the default config
    assert app.ws.config.labeling.demonstrations == "off"
    add_pairs(app.db, [("sample a of 0", "sample b of 0")])
    login(page, app.url, "alice")
    page.wait_for_selector(PAIR_SHOWN)
    assert page.locator("#demo-area").count() == 0 and page.get_by_text("Write a better answer").count() == 0
