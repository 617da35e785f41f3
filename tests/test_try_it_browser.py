"""The operator tab's "Try it" panel in Chromium, on a tiny workspace after a real round: an operator types
a prompt and reads v1's and v0's answers side by side (the same the loop's sampler gives); an annotator
has no such panel and is refused when her session calls its event."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from browser_utils import PASSWORD, free_port, login, open_console
from test_model_export import train_a_version

import storage
from labeling_app import AppServices, serve
from rlhf_core.service.playground import Playground, try_versions
from rlhf_core.training.workspace_stack import load_stack

pytestmark = [pytest.mark.browser,
              pytest.mark.filterwarnings("ignore:.*no_silent_downcasting", "ignore:The copy keyword is deprecated")]
playwright_api = pytest.importorskip("playwright.sync_api")

PROMPT = "Tell me a story."


@pytest.fixture(scope="module")
def try_app(tmp_path_factory, tiny_model_dir, tiny_rounds):  # noqa: ANN001, ANN201
    ws, db = train_a_version(tmp_path_factory.mktemp("try") / "ws", tiny_model_dir, tiny_rounds)
    storage.create_annotator(db, "olga", PASSWORD, role="operator")
    storage.create_annotator(db, "alice", PASSWORD, role="annotator")
    stack = load_stack(ws)
    lock = threading.Lock()

    @contextmanager
    def borrow() -> Iterator:
        with lock:
            yield stack

    playground = Playground(ws, db, borrow)
    services = AppServices(try_versions=lambda prompt, versions, greedy, n: playground.answer(
        prompt, versions, greedy=greedy, max_new_tokens=n))
    served = serve(ws, db, services, port=free_port(), block=False, quiet=True)
    try:
        yield ws, db, stack, served
    finally:
        served.close()
        db.dispose()


def test_operator_reads_two_versions_answers_side_by_side(try_app, page) -> None:  # noqa: ANN001
    ws, db, stack, served = try_app
    login(page, served.url, "olga")
    open_console(page)
    page.locator("#try-it").get_by_text("Try it: what do versions answer?").click()
    playwright_api.expect(page.locator("#try-version-a input")).to_have_value("v1 · grpo · round 1")
    playwright_api.expect(page.locator("#try-version-b input")).to_have_value("v0 · base")
    page.locator("#try-prompt textarea").fill(PROMPT)
    page.locator("#try-max-tokens input[type=number]").fill("16")
    page.locator("#try-max-tokens input[type=number]").press("Enter")
    page.click("#btn-try")
    page.locator("#try-note").get_by_text("Both answers greedy").wait_for(timeout=60_000)

    ours = try_versions(stack, db, [[{"role": "user", "content": PROMPT}]], [1, 0], greedy=True, max_new_tokens=16)
    (a,), (b,) = ours
    assert page.locator("#try-answer-a textarea").input_value() == a.text
    assert page.locator("#try-answer-b textarea").input_value() == b.text
    cut_a = ", cut off" if a.finish_reason == "length" else ""
    page.locator("#try-answer-a").get_by_text(f"v1 answers ({a.tokens} tokens{cut_a})").wait_for()
    page.locator("#try-answer-b").get_by_text("v0 answers (").wait_for()
    assert a.token_ids != b.token_ids  # the two versions answer differently: the panel shows two models


def test_annotator_has_no_try_it_and_cannot_call_it(try_app, page) -> None:  # noqa: ANN001
    _, _, _, served = try_app
    login(page, served.url, "alice")
    page.locator("#whoami").get_by_text("alice").wait_for()
    assert not page.locator("#link-operator").is_visible() and page.locator("#try-it").count() == 0
    response = page.request.post(f"{served.operator_url}gradio_api/run/try_versions",
                                 data={"data": [PROMPT, 1, 0, True, 8]})
    assert response.status == 500 and "Only operators" in response.text()
