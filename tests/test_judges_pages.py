"""Judges on the pages: the operator console's "AI judges" panel through its API (a run queued and audited, a
judge disabled, annotators refused), and, in Chromium, the labeling page showing a judge's choice as a hint with
labeling.show_suggestions on, the judgment then marked made under a hint."""

from __future__ import annotations

from pathlib import Path

import pytest
from browser_utils import PAIR_SHOWN, PASSWORD, add_pairs, login, shown_texts, start_app
from gradio_client import Client
from gradio_client.exceptions import AppError

import storage
from rlhf_core.config import dump_config
from rlhf_core.service.actor import Actor
from rlhf_core.service.judges import add_judge
from rlhf_core.workspace import init_workspace
from storage import AIJudgment

pytestmark = pytest.mark.filterwarnings("ignore:.*no_silent_downcasting", "ignore:The copy keyword is deprecated")
ACTOR = Actor("cli:test", "cli")


def test_an_operator_runs_and_disables_a_judge_and_an_annotator_cannot(app) -> None:  # noqa: ANN001
    olga = Client(app.operator_url, auth=("olga", PASSWORD), verbose=False, analytics_enabled=False)
    message, _ = olga.predict("nobody", 5, api_name="/run_judge")
    assert message.startswith("**Not started:** No judge named 'nobody'")
    add_judge(app.db, "gpt", "openai", ACTOR, base_url="http://127.0.0.1:9/v1", model="m")
    message, table = olga.predict("gpt", 5, api_name="/run_judge")
    (job,) = storage.list_jobs(app.db)
    assert (job.kind, job.status) == ("judge", "queued") and f"Queued judge job **#{job.id}**" in message
    assert [row[0] for row in table["data"]] == ["gpt"]
    (event,) = storage.audit_events(app.db, action="queue_judge")
    assert (event.actor, event.params["judge"], event.params["pairs"]) == ("olga", "gpt", 5)
    message, table = olga.predict("gpt", api_name="/toggle_judge")
    assert message.startswith("Disabled") and table["data"][0][2] == "no"
    assert not storage.get_judge(app.db, "gpt").active
    alice = Client(app.operator_url, auth=("alice", PASSWORD), verbose=False, analytics_enabled=False)
    for api_name, args in (("/run_judge", ("gpt", 5)), ("/toggle_judge", ("gpt",))):
        with pytest.raises(AppError, match="Only operators"):
            alice.predict(*args, api_name=api_name)
    assert len(storage.list_jobs(app.db)) == 1 and not storage.get_judge(app.db, "gpt").active


@pytest.mark.browser
def test_the_labeling_page_shows_a_judges_choice_as_a_hint(tmp_path: Path, page) -> None:  # noqa: ANN001
    ws, _ = init_workspace(tmp_path / "ws")
    ws.config.labeling.show_suggestions = True
    ws.config_path.write_text(dump_config(ws.config), encoding="utf-8")
    running = start_app(tmp_path / "ws", users={"alice": "annotator"})
    try:
        (pair_id,) = add_pairs(running.db, [("the first answer", "the second answer")])
        judge = add_judge(running.db, "gpt", "openai", ACTOR, base_url="http://127.0.0.1:9/v1", model="m")
        storage.record_ai_judgments(running.db, judge.annotator_id, [AIJudgment(pair_id, "a", 0.8, "why")])
        login(page, running.url, "alice", PASSWORD)
        page.locator(PAIR_SHOWN).wait_for()
        left, _ = shown_texts(page)
        side = "A" if left == "the first answer" else "B"  # the judge chose a, wherever a is shown
        assert page.locator("#judge-hint").inner_text() == f"AI judge gpt suggests: {side} better (80% sure)"
        page.locator("#btn-left").click()
        page.wait_for_function("() => document.body.classList.contains('rlhf-empty')")
        (row,) = [r for r in storage.judgment_rows(running.db) if r.annotator == "alice"]
        assert row.hint_shown is True
    finally:
        running.close()
