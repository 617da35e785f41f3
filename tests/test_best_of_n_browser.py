"""The operator console's best-of-N panel in Chromium, on a tiny workspace with a process reward model: an operator
samples N answers of the base, ranked by the PRM, and reads every answer with its score and the one kept (the
same the service gives); a scorer whose model does not exist yet is refused in one sentence; an annotator's session
calling the event is refused."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from browser_utils import PASSWORD, free_port, login, open_console

import storage
from labeling_app import AppServices, serve
from rlhf_core.models.process_reward import PRM
from rlhf_core.models.stack import LoraSettings
from rlhf_core.service.best_of_n import BestOfNPlayground, ScoringContext, best_of_n
from rlhf_core.training.workspace_stack import load_stack
from rlhf_core.workspace import init_workspace

pytestmark = [pytest.mark.browser,
              pytest.mark.filterwarnings("ignore:.*no_silent_downcasting", "ignore:The copy keyword is deprecated")]
playwright_api = pytest.importorskip("playwright.sync_api")

PROMPT = "Tell me about the river."


@pytest.fixture(scope="module")
def bon_app(tmp_path_factory, tiny_model_dir, perturb):  # noqa: ANN001, ANN201
    ws, _ = init_workspace(tmp_path_factory.mktemp("bon") / "ws", model=str(tiny_model_dir))
    ws.config.sampling.max_new_tokens = 10
    db = ws.database()
    storage.create_annotator(db, "olga", PASSWORD, role="operator")
    storage.create_annotator(db, "alice", PASSWORD, role="annotator")
    stack = load_stack(ws)
    stack.enable_prm(LoraSettings())
    perturb(stack, PRM, seed=4)  # a PRM whose step scores differ between answers
    path = stack.save_adapter(PRM, ws.adapters_dir / "prm-v0001")
    storage.add_prm_version(db, adapter_path=str(path), trained_on=0, heldout_step_accuracy=None, metrics={})
    lock = threading.Lock()

    @contextmanager
    def borrow() -> Iterator:
        with lock:
            yield stack

    services = AppServices(best_of_n=BestOfNPlayground(ws, db, borrow).answer)
    served = serve(ws, db, services, port=free_port(), block=False, quiet=True)
    try:
        yield ws, db, stack, served
    finally:
        served.close()
        db.dispose()


@pytest.fixture(scope="module")
def perturb():  # noqa: ANN201 - conftest's helper, at module scope
    from conftest import perturb_adapter

    return perturb_adapter


def test_operator_samples_n_answers_ranked_by_the_prm(bon_app, page) -> None:  # noqa: ANN001
    ws, db, stack, served = bon_app
    login(page, served.url, "olga")
    open_console(page)
    page.locator("#best-of-n").get_by_text("Best of N: sample N answers, keep the best").click()
    playwright_api.expect(page.locator("#bon-version input")).to_have_value("v0 · base")
    page.locator("#bon-prompt textarea").fill(PROMPT)
    page.locator("#bon-n input[type=number]").fill("3")
    page.locator("#bon-n input[type=number]").press("Enter")
    page.locator("#bon-by").get_by_text("rm: the reward model").click()
    page.click("#btn-bon")
    page.locator("#bon-note").get_by_text("needs a reward model").wait_for(timeout=30_000)

    page.locator("#bon-by").get_by_text("prm: the process reward model").click()
    page.click("#btn-bon")
    page.locator("#bon-note").get_by_text("3 answers sampled, ranked by prm").wait_for(timeout=60_000)
    cfg = ws.config.sampling
    (ours,) = best_of_n(ScoringContext(ws, db, stack), [[{"role": "user", "content": PROMPT}]], n=3, by="prm",
                        max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, top_p=cfg.top_p)
    assert page.locator("#bon-kept textarea").input_value() == ours.best.text
    assert page.locator("#bon-candidates [role=grid]").get_attribute("aria-rowcount") == "4"  # header + 3 answers
    rows = page.evaluate("() => [...document.querySelectorAll('#bon-candidates [role=row][data-index]')].map("
                         "r => [...r.querySelectorAll('[role=gridcell]')].map(c => c.innerText.trim()))")
    assert [row[0] for row in rows] == ["1", "2", "3"]
    assert [row[2] for row in rows] == ["yes" if i == ours.chosen else "" for i in range(3)]
    assert [float(row[1]) for row in rows] == pytest.approx([c.score for c in ours.candidates], abs=1e-4)


def test_an_annotator_cannot_call_best_of_n(bon_app, page) -> None:  # noqa: ANN001
    _, _, _, served = bon_app
    login(page, served.url, "alice")
    page.locator("#whoami").get_by_text("alice").wait_for()
    response = page.request.post(f"{served.operator_url}gradio_api/run/best_of_n",
                                 data={"data": [PROMPT, 0, 2, "prm"]})
    assert response.status == 500 and "Only operators" in response.text()
