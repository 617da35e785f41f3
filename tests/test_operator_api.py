"""The operator console (its own Gradio app at /operator/) through its API, no browser: every operator event
refuses annotators, including the private ones only the page fires; the labeling page has none of them; start
round, evaluation batch and export work for an operator; empty states read as sentences and dashes; the rounds
view renders stored metrics."""

from __future__ import annotations

import json
import re
import zipfile
from pathlib import Path

import datasets
import httpx
import pytest
from browser_utils import PASSWORD, RunningApp, add_pairs
from gradio_client import Client
from gradio_client.exceptions import AppError

import storage
from labeling_app.operator.rounds import curve_values, rounds_values
from rlhf_core.service.dashboard import rounds_table
from rlhf_core.simulator.simulate import simulate_annotators

# Gradio's queue builds Dataframe payloads with pandas options pandas 3 deprecates; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:.*no_silent_downcasting", "ignore:The copy keyword is deprecated")

OPERATOR_CALLS = [  # (api_name, arguments) of every operator event callable through the API
    ("/operator_dashboard", (None,)), ("/start_round", ("GRPO",)), ("/create_eval_batch", (4,)),
    ("/export_dataset", ("hf", 0.0, False, True)), ("/sample_pairs", (3,)), ("/operator_overview", ()),
    ("/operator_refresh", ()), ("/import_controls", (None,)), ("/try_versions", ("hello", 1, 0, True, 8)),
    ("/leaderboard", ("",)), ("/import_pairs", (None,)),
    ("/account_add", ("mallory", "operator")), ("/account_disable", ("olga", "annotator")),
    ("/account_enable", ("alice", "annotator")), ("/account_reset_password", ("olga", "annotator")),
    ("/account_set_role", ("alice", "operator")), ("/start_sft", ()), ("/rollback", ("v0",)),
]
PAGE_ONLY_EVENTS = {"page_head", "open_console", "tick", "show_curves", "choices", "sft_overview", "rollback_choices"}


def client(app: RunningApp, user: str, downloads: Path | None = None) -> Client:
    """A logged-in API client of the operator console."""
    return Client(app.operator_url, auth=(user, PASSWORD), verbose=False, analytics_enabled=False,
                  download_files=str(downloads) if downloads else False)


def download_path(output: object) -> str:
    """The downloaded file of a gr.File output (sent as an update that also makes it visible)."""
    return output["value"] if isinstance(output, dict) else output


def judged_pairs(app: RunningApp, n: int = 8) -> None:
    add_pairs(app.db, [(f"short {i}", f"a much longer answer number {i}") for i in range(n)])
    simulate_annotators(app.db, annotators=2, judgments=n, gold="longer", seed=0, progress=False)


def test_every_operator_event_refuses_an_annotator(app: RunningApp) -> None:
    judged_pairs(app)
    alice = client(app, "alice")
    for api_name, args in OPERATOR_CALLS:
        with pytest.raises(AppError, match="Only operators"):
            alice.predict(*args, api_name=api_name)

    # Events only the page fires are private (no API name) but still reachable by a raw POST naming
    # their fn_index; they refuse too (the page's head with a sentence instead of an error).
    fns = {fn.name: (index, len(fn.inputs)) for index, fn in app.served.operator.fns.items()}
    assert PAGE_ONLY_EVENTS <= set(fns)
    with httpx.Client(base_url=app.operator_url, timeout=30) as session:
        assert session.post("login", data={"username": "alice", "password": PASSWORD}).status_code == 200
        for name in sorted(PAGE_ONLY_EVENTS - {"page_head"}):
            index, n_inputs = fns[name]
            refused = session.post("gradio_api/run/predict",
                                   json={"fn_index": index, "data": [None] * n_inputs, "session_hash": "alice"})
            assert refused.status_code == 500 and "Only operators" in refused.text, name
        head = session.post("gradio_api/run/predict",
                            json={"fn_index": fns["page_head"][0], "data": [], "session_hash": "alice"}).json()
        assert "is for operators" in head["data"][1] and head["data"][3] == {"__type__": "update"}  # no name
    # None of these events exists on the labeling page (which has a `page_head` of its own).
    labeling = {name for fn in app.served.blocks.fns.values() for name in (fn.name, fn.api_name)}
    assert not labeling & (PAGE_ONLY_EVENTS - {"page_head"} | {name.lstrip("/") for name, _ in OPERATOR_CALLS})
    assert storage.list_jobs(app.db) == []
    assert list(app.ws.exports_dir.iterdir()) == []
    # No account changed: no new user, nobody disabled, promoted or with a new password.
    people = {u.username: (u.role, u.active) for u in storage.list_annotators(app.db)}
    assert "mallory" not in people and people["alice"] == ("annotator", True) and people["olga"] == ("operator", True)
    assert storage.authenticate(app.db, "olga", PASSWORD) is not None
    assert {e.action for e in storage.audit_events(app.db, actor="alice")} <= {"login"}


def test_operator_starts_one_round_at_a_time(app: RunningApp) -> None:
    olga = client(app, "olga")
    assert "No judgments yet" in olga.predict("PPO", api_name="/start_round")
    judged_pairs(app, n=2)
    message = olga.predict("PPO", api_name="/start_round")
    job_id = int(re.search(r"#(\d+)", message).group(1))
    job = storage.get_job(app.db, job_id)
    assert (job.kind, job.status) == ("round", "queued")
    assert json.loads(job.params_json) == {"algo": "ppo", "trigger": "operator", "requested_by": "olga"}

    again = olga.predict("GRPO", api_name="/start_round")
    assert "Not started" in again and f"#{job_id}" in again and "already under way" in again
    assert [j.id for j in storage.list_jobs(app.db)] == [job_id]
    with pytest.raises(AppError, match="not in the list of choices"):
        olga.predict("A2C", api_name="/start_round")


def test_operator_starts_a_dpo_round(app: RunningApp) -> None:
    judged_pairs(app, n=2)
    message = client(app, "olga").predict("DPO", api_name="/start_round")
    job = storage.get_job(app.db, int(re.search(r"#(\d+)", message).group(1)))
    assert "(DPO)" in message and json.loads(job.params_json)["algo"] == "dpo"


def test_evaluation_batch_needs_a_trained_policy_and_eval_prompts(app: RunningApp) -> None:
    olga = client(app, "olga")
    assert "base model" in olga.predict(4, api_name="/create_eval_batch")
    storage.add_policy_version(app.db, parent_id=0, adapter_path="/nowhere", algorithm="grpo", round=1, metrics={})
    assert "no eval prompts" in olga.predict(4, api_name="/create_eval_batch")
    storage.add_prompts(app.db, [[{"role": "user", "content": f"eval {i}"}] for i in range(3)], split="eval")
    message = olga.predict(4, api_name="/create_eval_batch")
    job = storage.get_job(app.db, int(re.search(r"#(\d+)", message).group(1)))
    assert job.kind == "eval_batch" and json.loads(job.params_json) == {"prompts": 4, "trigger": "operator",
                                                                        "requested_by": "olga"}
    assert "already under way" in olga.predict(4, api_name="/create_eval_batch")
    assert len(storage.list_jobs(app.db)) == 1


def test_export_downloads_a_zip_that_datasets_reads(app: RunningApp, tmp_path: Path) -> None:
    olga = client(app, "olga", downloads=tmp_path / "downloads")
    summary, nothing = olga.predict("hf", 0.0, False, True, api_name="/export_dataset")
    assert "Nothing exported" in summary and "no judgments" in summary
    assert nothing is None or nothing.get("value") is None

    judged_pairs(app, n=10)
    summary, download = olga.predict("hf", 0.0, False, True, api_name="/export_dataset")
    zip_path = download_path(download)
    assert "Exported **10 pairs**" in summary
    (exported,) = list(app.ws.exports_dir.iterdir())
    assert exported.name.startswith("preferences-") and exported.name.endswith("-hf")
    with zipfile.ZipFile(zip_path) as archive:
        archive.extractall(tmp_path / "unzipped")
    ds = datasets.load_from_disk(str(tmp_path / "unzipped" / exported.name))
    rows = sum(len(split) for split in ds.values())
    assert rows == 10 and {"prompt", "chosen", "rejected"} <= set(ds["train"].column_names)
    assert all("longer answer" in row["chosen"][0]["content"] for row in ds["train"])
    assert {name for row in ds["train"] for name in row["annotators"]} <= {"annotator-1", "annotator-2", "annotator-3"}

    summary, download = olga.predict("jsonl", 1.0, True, False, api_name="/export_dataset")
    assert "as `jsonl`" in summary
    archive = zipfile.ZipFile(download_path(download))
    (train,) = [name for name in archive.namelist() if name.endswith("train.jsonl")]
    usernames = {name for line in archive.read(train).decode().splitlines() for name in json.loads(line)["annotators"]}
    assert usernames and not any(name.startswith("annotator-") for name in usernames)


def _texts(values: object) -> str:
    return json.dumps(values, default=str)


def test_empty_dashboard_reads_as_sentences(app: RunningApp) -> None:
    values = client(app, "olga").predict(None, api_name="/operator_dashboard")
    text = _texts(values)
    assert "No judgments yet" in text and "No rounds yet" in text and "No job running" in text
    assert "No training job has run yet" in text and "Fleiss' kappa over a/b/tie/both_bad" in text
    assert not re.search(r"\b(nan|NaN|None|null)\b", " ".join(v for v in values if isinstance(v, str)))


def test_rounds_view_from_stored_metrics(sqlite_db: storage.Database) -> None:
    db = sqlite_db
    storage.add_policy_version(db, parent_id=0, adapter_path="/a", algorithm="grpo", round=1,
                               metrics={"reward_mean": 0.5, "kl_per_token": 0.01, "rm_heldout_accuracy": 0.7})
    storage.add_policy_version(db, parent_id=1, adapter_path="/b", algorithm="ppo", round=2,
                               metrics={"reward_mean": 0.9, "kl_per_token": 0.02, "rm_heldout_accuracy": 0.75,
                                        "value_loss": 0.25, "kl_base_per_token": 0.05, "response_length": 31.5,
                                        "reward_length_corr": 0.8125, "reward_seconds": 106.4,
                                        "policy_seconds": 74.9})
    table, note, *plots = rounds_values(rounds_table(db))
    assert [row[:2] for row in table] == [["v2", "ppo"], ["v1", "grpo"], ["v0 (base)", "base"]]
    assert table[0][3] == "75%" and table[0][13] == "0.25" and table[2][4] == "—"
    # KL to the base beside KL to the reference; the share of cut responses and the reward-length
    # correlation next to length (no samples with a known end yet: "—").
    assert table[0][5:7] == ["0.02", "0.05"] and table[0][9:12] == ["31.5", "—", "0.81"] and table[1][11] == "—"
    assert table[0][15] == "1:46 + 1:14" and table[1][15] == "—"  # a round's training time, when it ran as one
    accuracy = plots[0]
    assert accuracy.visible is True and accuracy.sort == ["v1", "v2"]
    assert "entropy per token" in note and "human win rate vs base" in note

    job = storage.enqueue_job(db, "round", {"algo": "grpo"})
    storage.finish_job(db, job.id, {})
    storage.add_training_logs(db, phase="policy", job_id=job.id,
                              rows=[{"step": s, "reward_mean": 0.1 * s, "kl_per_token": 0.01} for s in range(3)])
    dropdown, rm_loss, reward_curve, kl_curve, length_curve, *other_curves, curve_note = curve_values(db, None)
    assert dropdown.value == job.id and reward_curve.visible and kl_curve.sort == ["1", "2", "3"]
    assert not rm_loss.visible and "reward model: loss" in curve_note
    # DPO's four curves and SFT's two stay hidden for a GRPO round, and are not awaited in the note.
    assert len(other_curves) == 6 and not any(c.visible for c in other_curves)
    assert "DPO" not in curve_note and "SFT" not in curve_note


def test_try_it_without_a_model_says_where_to_generate(app: RunningApp) -> None:
    a, b, note = client(app, "olga").predict("hello", 0, 0, True, 8, api_name="/try_versions")
    assert "No model is attached to this server" in note and "rlhf generate" in note
