"""Accounts through the running app (HTTP, no browser) and the CLI: a brute-force loop on `/login` is
throttled within the configured N and never gets in, also across two app processes; every operator
action writes exactly one audit row naming its operator; `rlhf audit` filters."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from browser_utils import PASSWORD, RunningApp, add_pairs, start_app
from gradio_client import Client
from test_cli import rlhf
from test_multiprocess import start_servers, stop_servers, workspace_on

import storage
from labeling_app import AppServices
from rlhf_core.config import dump_config
from rlhf_core.simulator.simulate import simulate_annotators
from rlhf_core.workspace import open_workspace
from storage import Database, audit_events, create_annotator, failed_login_count, record_audit

# Gradio's queue builds Dataframe payloads with pandas options pandas 3 deprecates; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:.*no_silent_downcasting", "ignore:The copy keyword is deprecated")


@pytest.fixture
def app(tmp_path: Path) -> Iterator[RunningApp]:
    running = start_app(tmp_path / "ws", services=AppServices(request_pairs=lambda n: f"{n} queued"),
                        users={"alice": "annotator", "olga": "operator"})
    yield running
    running.close()


def test_two_hundred_wrong_passwords_are_throttled_within_n_and_never_get_in(app: RunningApp) -> None:
    n = app.ws.config.auth.max_failures
    codes = []
    with httpx.Client(base_url=app.url, timeout=30) as guesser:
        for i in range(200):
            codes.append(guesser.post("/login", data={"username": "olga", "password": f"guess-{i:04d}"}).status_code)
        assert 200 not in codes
        assert codes[:n] == [400] * n and set(codes[n:]) == {429}
        right = guesser.post("/login", data={"username": "olga", "password": PASSWORD})
        assert right.status_code == 429 and "Too many failed logins" in right.json()["detail"]
        # Another name from the same address is refused too (the address is throttled).
        assert guesser.post("/login", data={"username": "alice", "password": PASSWORD}).status_code == 429
    assert failed_login_count(app.db, username="olga") == n  # refused tries are not even counted
    assert [e.action for e in audit_events(app.db, actor="olga")] == ["login_failed"] * n


def test_throttle_holds_across_two_app_processes(db: Database, tmp_path: Path) -> None:
    ws = workspace_on(db, tmp_path / "ws")
    ws.config.auth.max_failures = 3
    ws.config_path.write_text(dump_config(ws.config))
    create_annotator(db, "alice", PASSWORD)
    servers = start_servers(ws, db, 2, tmp_path)
    try:
        (url_a, _), (url_b, _) = servers
        with httpx.Client(base_url=url_a, timeout=30) as on_a, httpx.Client(base_url=url_b, timeout=30) as on_b:
            for client in (on_a, on_b, on_a):
                assert client.post("/login", data={"username": "alice", "password": "nope-nope"}).status_code == 400
            for client in (on_b, on_a):
                assert client.post("/login", data={"username": "alice", "password": PASSWORD}).status_code == 429
    finally:
        stop_servers(servers)
    assert failed_login_count(db, username="alice") == 3


def test_every_operator_action_writes_one_audit_row(app: RunningApp) -> None:
    olga = Client(app.operator_url, auth=("olga", PASSWORD), verbose=False, analytics_enabled=False,
                  download_files=False)
    add_pairs(app.db, [(f"short {i}", f"a much longer answer number {i}") for i in range(6)])
    simulate_annotators(app.db, annotators=2, judgments=6, gold="longer", seed=0, progress=False)
    round_job = int(re.search(r"#(\d+)", olga.predict("GRPO", api_name="/start_round")).group(1))
    olga.predict(3, api_name="/sample_pairs")
    summary, _ = olga.predict("jsonl", 0.0, True, True, api_name="/export_dataset")
    rows = int(re.search(r"Exported \*\*(\d+) pairs", summary).group(1))
    storage.add_policy_version(app.db, parent_id=0, adapter_path="/nowhere", algorithm="grpo", round=1, metrics={})
    storage.add_prompts(app.db, [[{"role": "user", "content": "eval prompt"}]], split="eval")
    eval_job = int(re.search(r"#(\d+)", olga.predict(2, api_name="/create_eval_batch")).group(1))
    actions = [e for e in audit_events(app.db) if e.action not in ("login", "login_failed")]
    assert sorted(e.action for e in actions) == ["eval_batch", "export", "sample_pairs", "start_round"]
    assert {e.actor for e in actions} == {"olga"} and all(e.address == "127.0.0.1" for e in actions)
    params = {e.action: e.params for e in actions}
    assert params["start_round"] == {"algo": "grpo", "job": round_job}
    assert params["eval_batch"] == {"job": eval_job, "prompts": 2}
    assert params["sample_pairs"] == {"pairs": 3}
    assert params["export"] == {"anonymize": True, "format": "jsonl", "include_ties": True, "rows": rows,
                                "what": "preferences"}  # min agreement 0 filters nothing: not recorded


def test_audit_cli_filters(tmp_path: Path) -> None:
    ws = tmp_path / "proj"
    rlhf("init", "--workspace", str(ws))
    rlhf("user", "add", "bob", "-w", str(ws), "--password", "password123")
    rlhf("user", "set-role", "bob", "operator", "-w", str(ws))
    short = rlhf("user", "set-password", "bob", "-w", str(ws), "--password", "short", check=False)
    assert short.returncode == 1 and "at least 8" in short.stderr
    bad = rlhf("user", "add", "x\x1bname", "-w", str(ws), "--password", "password123", check=False)
    assert bad.returncode == 1 and "control characters" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
    db = open_workspace(ws).database()
    record_audit(db, "olga", "export", address="10.1.1.1", rows=4)
    db.dispose()
    lines = [json.loads(line) for line in rlhf("audit", "-w", str(ws), "--json").stdout.splitlines()]
    assert [e["action"] for e in lines] == ["export", "user_set_role", "user_add"]
    assert lines[1]["params"] == {"role": "operator", "sessions_ended": 0, "user": "bob"}
    only_olga = rlhf("audit", "-w", str(ws), "--user", "olga").stdout.splitlines()
    assert len(only_olga) == 1 and "export" in only_olga[0] and "10.1.1.1" in only_olga[0]
    assert rlhf("audit", "-w", str(ws), "--since", "2999-01-01").stdout == ""
    assert rlhf("audit", "-w", str(ws), "--action", "user_add").stdout.count("\n") == 1
    bad_since = rlhf("audit", "-w", str(ws), "--since", "yesterday", check=False)
    assert bad_since.returncode == 2 and "--since" in bad_since.stderr
