"""The labeling page's reading and correcting parts in Chromium: Markdown rendered (lists, code, tables)
with a raw-text toggle, hostile text inert (no dialog, no request leaving the page), cut responses
marked, Undo within and after its window, judging with the keyboard only, an operator adding a user who
then logs in, and axe-core finding no serious or critical problem on any page."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from browser_utils import (
    PAIR_SHOWN,
    PASSWORD,
    RunningApp,
    add_pairs,
    login,
    open_console,
    shown_texts,
    start_app,
    wait_for_new_pair,
)
from sqlmodel import select

import storage
from rlhf_core.config import dump_config
from rlhf_core.workspace import init_workspace

pytestmark = pytest.mark.browser
playwright_api = pytest.importorskip("playwright.sync_api")

UNDO_SECONDS = 4.0
MARKDOWN = ("## Plan\n\n- first step\n- second step\n\n```python\ndef add(a, b):\n    return a + b\n```\n\n"
            "| n | square |\n|---|---:|\n| 3 | 9 |")
# Hostile Markdown and HTML (tests/test_rich_text.py has the sanitizer's side of each).
HOSTILE = ("<script>alert('s')</script> <img src=x onerror=alert('i')> <svg onload=alert('v')></svg> "
           "[js](javascript:alert('j')) [data](data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==) "
           "![pixel](http://127.0.0.2:9/pixel.png) <http://127.0.0.2:9/auto> "
           "<div style=\"background:url(http://127.0.0.2:9/css.png)\">css</div> "
           "<style>body{background:url(http://127.0.0.2:9/style.png)}</style> "
           "<iframe src=\"http://127.0.0.2:9/frame\"></iframe> <details open ontoggle=alert('d')>x</details> "
           "${alert('t')} {{constructor.constructor('alert(1)')()}}")


@pytest.fixture
def app(tmp_path: Path):  # noqa: ANN201
    """alice (annotator) and olga (operator), with a short undo window so the test can outwait it."""
    ws, _ = init_workspace(tmp_path / "ws")
    ws.config.labeling.undo_seconds = UNDO_SECONDS
    ws.config_path.write_text(dump_config(ws.config), encoding="utf-8")
    running = start_app(tmp_path / "ws", users={"alice": "annotator", "olga": "operator"})  # reuses rlhf.toml
    assert running.ws.config.labeling.undo_seconds == UNDO_SECONDS
    yield running
    running.close()


def test_markdown_renders_and_the_raw_toggle_shows_the_text(app: RunningApp, page) -> None:  # noqa: ANN001
    add_pairs(app.db, [(MARKDOWN, "plain *answer*")], prompt=[{"role": "user", "content": "Write **code**."}])
    login(page, app.url, "alice")
    page.wait_for_selector(PAIR_SHOWN)
    pane = "#response-left" if "Plan" in shown_texts(page)[0] else "#response-right"
    assert page.locator(f"{pane} .rendered ul > li").all_inner_texts() == ["first step", "second step"]
    code = page.locator(f"{pane} .rendered pre code")
    assert code.inner_text() == "def add(a, b):\n    return a + b\n"
    assert "monospace" in code.evaluate("e => getComputedStyle(e).fontFamily")
    assert page.locator(f"{pane} .rendered td").all_inner_texts() == ["3", "9"]
    assert page.locator(f"{pane} .rendered h4").inner_text() == "Plan"
    assert page.locator("#prompt .rendered strong").inner_text() == "code"
    assert page.locator(f"{pane} .raw").is_hidden()

    page.get_by_label("Show raw text (no Markdown formatting)").check()
    assert page.locator(f"{pane} .rendered").is_hidden()
    raw = page.locator(f"{pane} .raw")
    assert raw.is_visible() and raw.inner_text() == MARKDOWN  # line breaks and spaces as written
    assert page.locator("#prompt .raw").inner_text().startswith("Write **code**.")
    page.get_by_label("Show raw text (no Markdown formatting)").uncheck()
    assert page.locator(f"{pane} ul").is_visible()


def test_hostile_text_stays_inert(app: RunningApp, page) -> None:  # noqa: ANN001
    add_pairs(app.db, [("a " + HOSTILE, "b " + HOSTILE)],
              prompt=[{"role": "system", "content": HOSTILE}, {"role": "user", "content": HOSTILE}])
    dialogs: list[str] = []
    requests: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.on("request", lambda r: requests.append(r.url))
    login(page, app.url, "alice")
    page.wait_for_selector(PAIR_SHOWN)
    page.wait_for_timeout(1500)  # give any injected image, frame or script the time to fire
    assert sorted(shown_texts(page)) == ["a " + HOSTILE, "b " + HOSTILE]
    for view in (False, True):
        page.get_by_label("Show raw text (no Markdown formatting)").set_checked(view)
        page.locator("#pair-area").hover()
        page.wait_for_timeout(300)
    origin = app.url.rstrip("/")
    assert dialogs == []
    assert [u for u in requests if not u.startswith(origin + "/")] == []
    panes = page.locator("#prompt, #response-left, #response-right")
    assert panes.locator("script, img, svg, iframe, a, style, details, [style*=url]").count() == 0
    assert "[image: pixel]" in page.locator("#response-left .rendered").inner_text()


def test_a_cut_response_is_marked_on_its_pane(app: RunningApp, page) -> None:  # noqa: ANN001
    storage.add_prompts(app.db, [[{"role": "user", "content": "Tell a story."}]])
    prompt = storage.list_prompts(app.db)[0]
    storage.record_generations(app.db, prompt_id=prompt.id, policy_version_id=0, gen_params={}, pairs=[(0, 1)],
                               responses=[("Once upon a time the game is", 64, "length"), ("The end.", 9, "eos")])
    login(page, app.url, "alice")
    page.wait_for_selector(PAIR_SHOWN)
    cut_side = "#response-left" if shown_texts(page)[0].startswith("Once") else "#response-right"
    whole_side = "#response-right" if cut_side == "#response-left" else "#response-left"
    assert page.locator(f"{cut_side} .cut-off").inner_text() == "Cut off at 64 tokens: the model had not finished."
    assert page.locator(f"{whole_side} .cut-off").count() == 0
    page.locator("#guidelines").click()  # the accordion: how to judge them
    assert "Judge a cut-off response by what it says" in page.locator("#guidelines-text").inner_text()


def test_undo_within_the_window_then_final(app: RunningApp, page) -> None:  # noqa: ANN001
    add_pairs(app.db, [(f"sample a of {i}", f"sample b of {i}") for i in range(3)])
    login(page, app.url, "alice")
    page.wait_for_selector(PAIR_SHOWN)
    first_left, _ = shown_texts(page)
    assert page.locator("#btn-undo").is_hidden()
    page.click("#btn-left")
    wait_for_new_pair(page, first_left)
    page.locator("#btn-undo").wait_for(state="visible")
    page.click("#btn-undo")  # within the window: the pair comes back, the judgment is gone
    page.wait_for_function("t => document.querySelector('#response-left .raw').textContent === t", arg=first_left)
    assert re.search(r"Took back your verdict on pair #\d+", page.locator("#notice").inner_text())
    assert storage.judgment_rows(app.db) == [] and page.locator("#btn-undo").is_hidden()

    page.keyboard.press("2")  # judge again, then let the window pass
    wait_for_new_pair(page, first_left)
    page.locator("#btn-undo").wait_for(state="visible")
    page.locator("#btn-undo").wait_for(state="hidden", timeout=int(UNDO_SECONDS * 1000) + 3000)
    second_left, _ = shown_texts(page)
    page.keyboard.press("u")  # the key does nothing once the button is gone
    page.wait_for_timeout(500)
    assert shown_texts(page)[0] == second_left and len(storage.judgment_rows(app.db)) == 1
    with app.db.session() as s:  # and the server refuses too (the page's last undo id, replayed)
        (judgment,) = s.exec(select(storage.Judgment)).all()
    alice = storage.get_annotator(app.db, "alice")
    late = storage.undo_judgment(app.db, alice.id, judgment_id=judgment.id, undo_seconds=UNDO_SECONDS,
                                 lease_seconds=300, since=judgment.created_at)
    assert late.outcome == "undo_too_late" and len(storage.judgment_rows(app.db)) == 1
    (event,) = storage.audit_events(app.db, action=storage.UNDO_ACTION)
    assert event.actor == "alice"


def test_judging_works_with_the_keyboard_only(app: RunningApp, page) -> None:  # noqa: ANN001
    add_pairs(app.db, [(f"sample a of {i}", f"sample b of {i}") for i in range(3)])
    page.goto(app.url)
    page.get_by_label("username").focus()
    page.keyboard.type("alice")
    page.keyboard.press("Tab")
    page.keyboard.type(PASSWORD)
    page.keyboard.press("Enter")
    page.wait_for_selector(PAIR_SHOWN)
    left, _ = shown_texts(page)
    page.keyboard.press("e")  # strength: strong
    for _ in range(60):  # Tab to the reason box
        page.keyboard.press("Tab")
        if page.evaluate("() => !!document.activeElement.closest('#reason')"):
            break
    else:
        pytest.fail("Tab never reached the reason box")
    page.keyboard.type("clearer")
    page.keyboard.press("Escape")
    page.keyboard.press("1")
    wait_for_new_pair(page, left)
    page.keyboard.press("u")
    page.wait_for_function("t => document.querySelector('#response-left .raw').textContent === t", arg=left)
    page.keyboard.press("b")
    wait_for_new_pair(page, left)
    (row,) = storage.judgment_rows(app.db)
    assert (row.text_a if row.left_side == "a" else row.text_b) == left
    assert row.choice == ("b" if row.left_side == "a" else "a") and row.strength is None  # the undone one had it
    page.locator("#reason textarea, #reason input").first.focus()
    for _ in range(40):  # the raw-text toggle is reachable (back from the reason box) and works with Space
        page.keyboard.press("Shift+Tab")
        if page.evaluate("() => !!document.activeElement.closest('#raw-toggle')"):
            break
    else:
        pytest.fail("Tab never reached the raw-text toggle")
    page.keyboard.press("Space")
    assert page.locator("#response-left .raw").is_visible()


def test_an_operator_adds_a_user_who_then_logs_in(app: RunningApp, browser, page) -> None:  # noqa: ANN001
    login(page, app.url, "olga")
    open_console(page)
    page.get_by_label("New user's name").fill("carol")
    page.get_by_role("button", name="Add user").click()
    message = page.locator("#account-result")
    message.get_by_text("shown this once").wait_for()
    password = re.search(r"password is (\S+): it is shown", message.inner_text()).group(1)
    page.locator("#users").get_by_text("carol", exact=True).wait_for()  # the user list, refreshed
    assert any(e.action == "user_add" and e.actor == "olga" for e in storage.audit_events(app.db))

    carol = browser.new_context().new_page()
    try:
        # Two pairs: olga's own labeling tab polls for work and may lease one of them first.
        add_pairs(app.db, [("sample a", "sample b"), ("sample c", "sample d")])
        login(carol, app.url, "carol", password)
        carol.wait_for_selector(PAIR_SHOWN)
        assert "Signed in as carol (annotator)" in carol.locator("#whoami").inner_text()
    finally:
        carol.context.close()


def _serious(page, axe) -> list[str]:  # noqa: ANN001
    results = axe.run(page)
    return [f"{v['id']} ({v['impact']}): {v['help']} at {[n['target'] for n in v['nodes']][:4]}"
            for v in results.response["violations"] if v["impact"] in ("serious", "critical")]


def test_axe_finds_no_serious_problem_on_any_page(app: RunningApp, browser, page) -> None:  # noqa: ANN001
    axe_api = pytest.importorskip("axe_playwright_python.sync_playwright")
    axe = axe_api.Axe()
    page.goto(app.url)
    page.get_by_label("username").wait_for()
    assert _serious(page, axe) == [], "login page"
    login(page, app.url, "alice")
    page.wait_for_selector("#no-pairs", state="visible")
    assert _serious(page, axe) == [], "nothing to judge"
    add_pairs(app.db, [(MARKDOWN, "short answer")])
    page.wait_for_selector(PAIR_SHOWN, state="visible", timeout=15_000)
    assert _serious(page, axe) == [], "a pair shown"
    page.keyboard.press("1")
    page.locator("#btn-undo").wait_for(state="visible")
    assert _serious(page, axe) == [], "after a verdict, with Undo"

    operator = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
    try:
        login(operator, app.url, "olga")
        operator.locator("#link-operator").wait_for()
        assert _serious(operator, axe) == [], "labeling page of an operator (with the console's link)"
        open_console(operator)
        operator.locator("#users span.text").get_by_text("alice", exact=True).wait_for()
        assert _serious(operator, axe) == [], "operator console"
        page.goto(app.operator_url)  # alice, an annotator
        page.locator("#operator-refusal").get_by_text("is for operators").wait_for()
        assert _serious(page, axe) == [], "operator console refusing an annotator"
    finally:
        operator.context.close()
