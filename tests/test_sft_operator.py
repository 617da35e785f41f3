"""The operator tab's "Supervised fine-tuning" panel through its API: an operator starts SFT (refused with a
sentence while there are no demonstrations or a job is under way), the action is audited, and the summary counts
the demonstrations by origin; annotators are refused (tests/test_operator_api.py lists the event too)."""

from __future__ import annotations

import pytest
from browser_utils import PASSWORD, RunningApp
from gradio_client import Client
from gradio_client.exceptions import AppError

import storage
from labeling_app.operator.sft import sft_summary

pytestmark = pytest.mark.filterwarnings("ignore:.*no_silent_downcasting", "ignore:The copy keyword is deprecated")


def test_an_operator_starts_sft_and_an_annotator_cannot(app: RunningApp) -> None:
    olga = Client(app.operator_url, auth=("olga", PASSWORD), verbose=False, analytics_enabled=False)
    result, summary = olga.predict(api_name="/start_sft")
    assert result.startswith("**Not started:** No demonstrations yet") and "rlhf demos import FILE" in summary
    assert storage.list_jobs(app.db) == []

    storage.add_demonstrations(app.db, [storage.DemonstrationSpec([{"role": "user", "content": f"q{i}"}], f"a{i}")
                                        for i in range(3)], source="test")
    result, summary = olga.predict(api_name="/start_sft")
    (job,) = storage.list_jobs(app.db)
    assert (job.kind, job.status) == ("train_sft", "queued") and f"Queued SFT job **#{job.id}**" in result
    assert "**3 demonstrations**: 0 written on the labeling page (0 of them edits" in summary
    assert "3 imported" in summary and "No SFT version yet" in summary
    again, _ = olga.predict(api_name="/start_sft")
    assert again == (f"**Not started:** SFT is already under way: job #{job.id} (queued). Wait until it is done or "
                     "failed.")
    assert [e.params["job"] for e in storage.audit_events(app.db, action="start_sft")] == [job.id]

    alice = Client(app.operator_url, auth=("alice", PASSWORD), verbose=False, analytics_enabled=False)
    with pytest.raises(AppError, match="Only operators"):
        alice.predict(api_name="/start_sft")
    assert len(storage.list_jobs(app.db)) == 1


def test_the_summary_names_the_newest_sft_version(sqlite_db) -> None:  # noqa: ANN001
    storage.add_demonstrations(sqlite_db, [storage.DemonstrationSpec([{"role": "user", "content": "q"}], "a")],
                               source="test")
    storage.add_policy_version(sqlite_db, parent_id=0, adapter_path="/nowhere", algorithm="sft", round=1,
                               metrics={"heldout_nll_before": 2.5, "heldout_nll": 1.25, "best_epoch": 2})
    text = sft_summary(sqlite_db, "optional")
    assert "Newest SFT version: **v1**, held-out NLL per answer token 2.5 before, 1.25 after (epoch 2 kept)" in text
    assert "`optional`" in text
