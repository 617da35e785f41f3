"""The annotator page in a real browser: login, judging by mouse and keyboard, skipping, inert
rendering of hostile text, and a pair appearing without reload when the pool was empty."""

from __future__ import annotations

import re

import pytest
from browser_utils import (
    PAIR_SHOWN,
    PROMPT_RAW,
    RunningApp,
    add_pairs,
    login,
    shown_texts,
    wait_for_new_pair,
)
from sqlmodel import select

from storage import Judgment, Skip, judgment_rows

pytestmark = pytest.mark.browser

playwright_api = pytest.importorskip("playwright.sync_api")


def _sample_side(text: str) -> str:
    """Test texts are 'sample a of N' / 'sample b of N'."""
    return re.match(r"sample ([ab]) of", text).group(1)


def test_judge_with_mouse_and_keyboard_then_skip(app: RunningApp, page) -> None:  # noqa: ANN001
    add_pairs(app.db, [(f"sample a of {i}", f"sample b of {i}") for i in range(7)])
    login(page, app.url, "alice")
    page.wait_for_selector(PAIR_SHOWN)
    expected: list[tuple[str, str, str]] = []  # (text on the left, choice, left side)

    def act(action) -> None:  # noqa: ANN001
        left, right = shown_texts(page)
        verdict = action()
        choice = {"left": _sample_side(left), "right": _sample_side(right)}.get(verdict, verdict)
        expected.append((left, choice, _sample_side(left)))
        wait_for_new_pair(page, left)

    # Mouse.
    act(lambda: page.click("#btn-left") or "left")
    act(lambda: page.click("#btn-right") or "right")
    act(lambda: page.click("#btn-tie") or "tie")
    # Keyboard, with a strength key; digits typed into the reason box are text, not shortcuts.
    page.keyboard.press("w")
    assert page.locator("#strength input[value=clear]").is_checked()
    left_before, _ = shown_texts(page)
    page.click("#reason input, #reason textarea")
    page.keyboard.type("B is 1st")
    page.wait_for_timeout(500)
    assert shown_texts(page)[0] == left_before  # the "1" typed in the box judged nothing
    assert len(judgment_rows(app.db)) == 3
    page.keyboard.press("Escape")
    act(lambda: page.keyboard.press("2") or "right")
    act(lambda: page.keyboard.press("a") or "left")
    act(lambda: page.keyboard.press("n") or "both_bad")
    # Skip (keyboard), which leaves no judgment.
    skipped_left, _ = shown_texts(page)
    page.keyboard.press("s")
    page.wait_for_selector("#no-pairs", state="visible")
    # The skipped pair still wants a judgment from someone else, so it counts as left.
    assert re.search(r"Today:\s*6\b.*Total:\s*6\b.*Pairs left:\s*1\b", page.locator("#progress").inner_text())

    rows = {r.text_a if r.left_side == "a" else r.text_b: r for r in judgment_rows(app.db)}
    assert len(rows) == len(expected) == 6
    for left, choice, left_side in expected:
        assert rows[left].choice == choice, left
        assert rows[left].left_side == left_side
        assert rows[left].annotator == "alice"
    strength_row = rows[expected[3][0]]
    assert (strength_row.strength, strength_row.rationale) == ("clear", "B is 1st")
    assert all(r.strength is None for k, r in rows.items() if k != expected[3][0])
    with app.db.session() as s:
        assert len(s.exec(select(Skip)).all()) == 1
        latencies = [j.latency_ms for j in s.exec(select(Judgment)).all()]
    assert all(lat is not None and 0 <= lat < 120_000 for lat in latencies)
    assert skipped_left not in rows


def test_wrong_password_is_refused(app: RunningApp, page) -> None:  # noqa: ANN001
    login(page, app.url, "alice", "not-the-password")
    page.get_by_text(re.compile("incorrect credentials", re.I)).wait_for()
    assert page.locator("#response-left").count() == 0


HOSTILE = "<script>alert(1)</script> <img src=x onerror=alert(1)> ![x](http://127.0.0.2:9/pixel.png)"


def test_hostile_text_renders_inert(app: RunningApp, page) -> None:  # noqa: ANN001
    add_pairs(app.db, [("a: " + HOSTILE, "b: " + HOSTILE)],
              prompt=[{"role": "system", "content": HOSTILE}, {"role": "user", "content": HOSTILE}])
    dialogs: list[str] = []
    requests: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.on("request", lambda r: requests.append(r.url))
    login(page, app.url, "alice")
    page.wait_for_selector(PAIR_SHOWN)
    page.wait_for_timeout(1500)  # give any injected image or script the time to fire
    left, right = shown_texts(page)
    assert sorted([left, right]) == ["a: " + HOSTILE, "b: " + HOSTILE]
    prompt = page.locator(PROMPT_RAW).text_content()  # each turn headed by its role
    assert prompt.startswith(f"── System ──\n{HOSTILE}\n\n── User ──\n{HOSTILE} [")  # plus the test's unique tag
    assert dialogs == []
    assert page.locator("img[src='x'], img[src*='127.0.0.2']").count() == 0
    app_origin = app.url.rstrip("/")
    assert [u for u in requests if not u.startswith(app_origin + "/")] == []
    assert [u for u in requests if u.split("?")[0].endswith("/x") or "pixel.png" in u] == []


def test_empty_pool_message_then_new_pair_without_reload(app: RunningApp, page) -> None:  # noqa: ANN001
    navigations: list[str] = []
    login(page, app.url, "alice")
    page.wait_for_selector("#no-pairs", state="visible")
    assert page.locator("#pair-area").is_hidden()
    page.on("framenavigated", lambda f: navigations.append(f.url))
    add_pairs(app.db, [("sample a of late", "sample b of late")])
    page.wait_for_selector(PAIR_SHOWN, state="visible", timeout=12_000)
    assert sorted(shown_texts(page)) == ["sample a of late", "sample b of late"]
    assert page.locator("#no-pairs").is_hidden()
    assert navigations == []
