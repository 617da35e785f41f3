"""The CLI and the operator console refuse the same requests with the same sentence: both go through one action
service (rlhf_core.service) with one set of rules, so a round, an evaluation batch, SFT, an import, an account
change and a rollback are refused alike however they are asked for, and nothing is queued or changed."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from browser_utils import PASSWORD, RunningApp
from gradio_client import Client, handle_file

import storage
from rlhf_core.cli.main import main as rlhf_main


def cli(app: RunningApp, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, *args: str) -> str:
    """The refusal an `rlhf` command printed: its one `error:` line, without the prefix."""
    monkeypatch.setattr("sys.argv", ["rlhf", *args, "-w", str(app.ws.root)])
    with pytest.raises(SystemExit) as exit_:
        rlhf_main()
    _, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert exit_.value.code == 1 and lines[-1].startswith("error: "), err
    return lines[-1].removeprefix("error: ")


def page(reply: str | tuple) -> str:
    """The refusal sentence the console showed, without its Markdown lead ("**Not started:** ", "Not added: ") and
    escapes."""
    text = reply[0] if isinstance(reply, tuple) else reply
    text = re.sub(r"^(\*\*[^*]+\*\* |Not (added|done): )", "", text)
    return re.sub(r"\\(.)", r"\1", text).rstrip(".") + "."  # Markdown escapes shown as the characters they are


def same(a: str, b: str) -> None:
    assert a.rstrip(".") == b.rstrip("."), (a, b)


def test_the_cli_and_the_console_refuse_the_same_requests(app: RunningApp, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str],
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    olga = Client(app.operator_url, auth=("olga", PASSWORD), verbose=False, analytics_enabled=False,
                  download_files=False)
    run = lambda *args: cli(app, capsys, monkeypatch, *args)  # noqa: E731

    # A round before any judgment.
    refused = run("round")
    assert refused.startswith("No judgments yet")
    same(refused, page(olga.predict("GRPO", api_name="/start_round")))
    # An evaluation batch of the base, then without eval prompts.
    refused = run("eval-batch", "--prompts", "4")
    assert refused.startswith("The current policy is the base model")
    same(refused, page(olga.predict(4, api_name="/create_eval_batch")))
    storage.add_policy_version(app.db, parent_id=0, adapter_path="/nowhere", algorithm="grpo", round=1, metrics={})
    refused = run("eval-batch", "--prompts", "4")
    assert refused.startswith("There are no eval prompts")
    same(refused, page(olga.predict(4, api_name="/create_eval_batch")))
    # SFT without demonstrations.
    refused = run("train-sft")
    assert refused.startswith("No demonstrations yet")
    same(refused, page(olga.predict(api_name="/start_sft")))
    # A round while another is queued (queued here by hand, as a worker's automatic round would be).
    storage.add_prompts(app.db, [[{"role": "user", "content": "q"}]])
    prompt = storage.list_prompts(app.db)[0]
    (pair,) = storage.record_generations(app.db, prompt_id=prompt.id, policy_version_id=1,
                                         responses=[("a", 1), ("b", 1)], gen_params={}, pairs=[(0, 1)])
    storage.record_judgment(app.db, pair_id=pair.id, annotator_id=storage.get_annotator(app.db, "alice").id,
                            choice="a", require_served=False)
    job = storage.enqueue_job(app.db, "round", {"trigger": "auto"})
    refused = run("round")
    assert refused.startswith(f"A round is already under way: job #{job.id} (queued)")
    same(refused, page(olga.predict("GRPO", api_name="/start_round")))
    # A rollback while that round waits, and one to an unknown version.
    refused = run("rollback", "--to", "0")
    assert refused.startswith(f"a round job is under way (job #{job.id}, queued)")
    same(refused, page(olga.predict("v0", api_name="/rollback")))
    storage.finish_job(app.db, job.id, {})
    same(run("rollback", "--to", "7"), page(olga.predict("v7", api_name="/rollback")))
    # An import whose file is bad: the same line (the console names the upload by its file name).
    bad = tmp_path / "controls.csv"
    bad.write_text("prompt,response_a,response_b,expected\nhi,a,b,maybe\n", encoding="utf-8")
    refused = run("controls", "import", str(bad))
    assert "expected must be one of a, b, tie, both_bad" in refused
    same(refused.replace(str(bad), bad.name), page(olga.predict(handle_file(str(bad)), api_name="/import_controls")))
    # An account: a name the rules refuse.
    monkeypatch.setenv("RLHF_PASSWORD", "long-enough-password")
    refused = run("user", "add", "x" * 65)
    assert refused == "username must be 1-64 characters"
    same(refused, page(olga.predict("x" * 65, "annotator", api_name="/account_add")))

    # Nothing was queued or changed by any of them.
    assert [j.id for j in storage.list_jobs(app.db)] == [job.id]
    assert storage.current_policy(app.db).id == 1 and storage.count_control_pairs(app.db) == 0
    assert {u.username for u in storage.list_annotators(app.db)} == {"alice", "olga"}
