"""Keeping the best version, on SQLite and PostgreSQL: `rlhf rollback --to N` (rlhf_core.service.versions) makes
version N current (served, trained from next), nothing deleted, audited, and every refusal changes nothing; with
`loop.promote = "if_not_worse"` a version the evidence says is worse than its predecessor stops being current
(rlhf_core.loop.evidence.judge_current_version)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import storage
from rlhf_core.cli.main import main as rlhf_main
from rlhf_core.config import dump_config
from rlhf_core.loop.evidence import judge_current_version
from rlhf_core.service.actor import ActionRefused, Actor
from rlhf_core.service.dashboard import overoptimization_status, rounds_table
from rlhf_core.service.versions import rollback
from rlhf_core.workspace import Workspace, init_workspace

OLGA = Actor.operator("olga", "127.0.0.1")


def workspace_on(db: storage.Database, root: Path) -> Workspace:
    ws, _ = init_workspace(root, db_url=db.url)
    return ws


def three_versions(db: storage.Database) -> None:
    """v1 <- v0, v2 <- v1; v2 is current; two open training pairs sampled from v2, one from v1."""
    storage.add_policy_version(db, parent_id=0, adapter_path="/a/v1", algorithm="grpo", round=1, metrics={})
    storage.add_policy_version(db, parent_id=1, adapter_path="/a/v2", algorithm="grpo", round=2, metrics={})
    storage.add_prompts(db, [[{"role": "user", "content": "hello"}]])
    prompt = storage.list_prompts(db)[0]
    for version, n in ((2, 2), (1, 1)):
        texts = [(f"v{version} answer {i}", 3) for i in range(2 * n)]
        storage.record_generations(db, prompt_id=prompt.id, policy_version_id=version, responses=texts,
                                   gen_params={}, pairs=[(2 * i, 2 * i + 1) for i in range(n)], round=version)


def test_rollback_makes_a_version_current_deletes_nothing_and_is_audited(db: storage.Database) -> None:
    three_versions(db)
    assert storage.current_policy(db).id == 2 and storage.open_pair_count(db) == 3
    assert rollback(db, "v1", OLGA).id == 1
    assert storage.current_policy(db).id == 1
    assert [v.id for v in storage.list_policies(db)] == [0, 1, 2]  # nothing deleted
    assert storage.open_pair_count(db) == 1  # v2's pairs are no longer served
    (event,) = storage.audit_events(db, action="rollback")
    assert (event.actor, event.address) == ("olga", "127.0.0.1")
    assert event.params == {"from": 2, "to": 1, "open_pairs_closed": 2}
    rows = {r["version"]: r for r in rounds_table(db)}
    assert rows[1]["current"] and rows[1]["current_note"] == "current: rolled back to by olga"
    assert not rows[2]["current"]
    # The next version continues the current one and takes the next free number (v2 keeps its own).
    assert storage.next_policy_id(db) == 3
    new = storage.add_policy_version(db, parent_id=1, adapter_path="/a/v3", algorithm="grpo", round=2, metrics={})
    assert new.id == 3 and storage.current_policy(db).id == 3
    assert rollback(db, 2, OLGA).id == 2  # any version may be made current again


@pytest.mark.parametrize(("target", "message"), [
    ("9", "there is no policy version 9 (versions: v0, v1, v2)"),
    ("rm1", "rm1 is a reward-model version; rollback chooses the policy version"),
    ("v2", "v2 is already the current version; nothing changed"),
    ("best", "'best' is not a policy version; give its number, e.g. 3 or v3"),
])
def test_a_refused_rollback_changes_nothing(db: storage.Database, target: str, message: str) -> None:
    three_versions(db)
    with pytest.raises(ActionRefused, match=message.replace("(", r"\(").replace(")", r"\)")):
        rollback(db, target, OLGA)
    assert storage.current_policy(db).id == 2 and storage.open_pair_count(db) == 3
    assert storage.audit_events(db, action="rollback") == []


def test_no_rollback_while_a_round_is_under_way(db: storage.Database) -> None:
    three_versions(db)
    job = storage.enqueue_job(db, "round", {})
    with pytest.raises(ActionRefused, match=rf"a round job is under way \(job #{job.id}, queued\)"):
        rollback(db, 1, OLGA)
    storage.claim_next_job(db, "w1")
    with pytest.raises(ActionRefused, match="running"):
        rollback(db, 1, OLGA)
    assert storage.current_policy(db).id == 2


def test_cli_rollback_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    ws, _ = init_workspace(tmp_path / "ws")
    db = ws.database()
    three_versions(db)

    def run(*args: str) -> tuple[int, str, str]:
        monkeypatch.setattr("sys.argv", ["rlhf", *args, "-w", str(ws.root)])
        try:
            rlhf_main()
            code = 0
        except SystemExit as exc:
            code = int(exc.code or 0)
        out, err = capsys.readouterr()
        return code, out, err

    code, _, err = run("rollback", "--to", "rm2")
    assert code == 1 and err.strip().splitlines() == [
        "error: rm2 is a reward-model version; rollback chooses the policy version that is served and trained from "
        "next (give v0, v1, ...)"]
    code, out, _ = run("rollback", "--to", "1")
    assert code == 0 and "Policy v1 is current (was v2)" in out
    status = json.loads(run("status", "--json")[1])
    assert status["overoptimization"]["version"] == 1 and status["versions"]["policy"] == 2
    db.dispose()


def evidence(db: storage.Database, version: int, **metrics: object) -> None:
    storage.update_policy_metrics(db, version, metrics)


def test_a_version_worse_than_its_predecessor_is_not_kept_current(db: storage.Database, tmp_path: Path) -> None:
    ws = workspace_on(db, tmp_path / "ws")
    three_versions(db)
    evidence(db, 1, claimed_gain=0.6, rescored_gain=0.5)
    # The next reward model scores v2's answers below v1's: v2 is worse, v1 becomes current again.
    evidence(db, 2, claimed_gain=1.4, rescored_gain=0.1, rescored_predecessor_gain=0.6)
    alarm, worse = judge_current_version(ws, db, storage.get_policy(db, 2))
    assert worse.startswith("the next reward model scores v2 +0.10 base std above the base, below its predecessor's")
    assert alarm is not None and "re-scores the gain at +0.10 base std, not the +1.40 claimed" in alarm.reason
    assert storage.current_policy(db).id == 1 and storage.open_pair_count(db) == 1
    metrics = json.loads(storage.get_policy(db, 2).metrics_json)
    assert metrics["promotion"] == {"promoted": False, "reason": worse} and metrics["overoptimization"] == alarm.reason
    assert [e.action for e in storage.audit_events(db, actor="auto")] == ["demote", "overoptimization"]
    rows = {r["version"]: r for r in rounds_table(db)}
    assert rows[1]["current_note"] == "current: v2 was not promoted"
    assert rows[2]["current_note"] == f"not promoted: {worse}"
    status = overoptimization_status(db)
    assert status["version"] == 1 and not status["alarm"] and status["alarms"] == {"2": alarm.reason}


def test_promote_always_keeps_the_newest_version(db: storage.Database, tmp_path: Path) -> None:
    ws = workspace_on(db, tmp_path / "ws")
    ws.config.loop.promote = "always"
    ws.config_path.write_text(dump_config(ws.config))
    three_versions(db)
    evidence(db, 2, claimed_gain=1.4, rescored_gain=0.1, rescored_predecessor_gain=0.6)
    alarm, worse = judge_current_version(ws, db, storage.get_policy(db, 2))
    assert worse is None and alarm is not None  # the alarm still stands and is recorded
    assert storage.current_policy(db).id == 2
    assert overoptimization_status(db)["alarm"] is True


def test_a_version_as_good_as_its_predecessor_stays(db: storage.Database, tmp_path: Path) -> None:
    ws = workspace_on(db, tmp_path / "ws")
    three_versions(db)
    evidence(db, 2, claimed_gain=1.0, rescored_gain=0.9, rescored_predecessor_gain=0.6,
             fresh={"right": 70, "n": 100})
    assert judge_current_version(ws, db, storage.get_policy(db, 2)) == (None, None)
    assert storage.current_policy(db).id == 2 and storage.audit_events(db, actor="auto") == []


def test_the_rounds_view_shows_the_evidence_the_chart_and_the_alarm(db: storage.Database, tmp_path: Path) -> None:
    from labeling_app.operator.rounds import ROUND_COLUMNS, rounds_values

    ws = workspace_on(db, tmp_path / "ws")
    three_versions(db)
    evidence(db, 1, claimed_gain=0.6, rescored_gain=0.5, kl_base_per_token=0.01,
             fresh={"right": 70, "n": 100, "accuracy": 0.7, "interval": [0.604, 0.781]})
    evidence(db, 2, claimed_gain=1.4, rescored_gain=0.1, rescored_predecessor_gain=0.6, kl_base_per_token=0.09,
             fresh={"right": 45, "n": 100, "accuracy": 0.45, "interval": [0.355, 0.548]})
    ws.config.loop.promote = "always"
    alarm, _ = judge_current_version(ws, db, storage.get_policy(db, 2))
    table, note, *plots, chart = rounds_values(rounds_table(db))
    row = dict(zip(ROUND_COLUMNS, table[0]))
    assert row["version"] == "v2" and row["proxy gain (claimed / re-scored)"] == "+1.40 / +0.10"
    assert row["fresh RM acc."] == "45% [36%, 55%] (n=100)"
    assert row["current?"] == "current: the newest version" and row["over-optimization"] == alarm.reason
    assert note.startswith(f"**Over-optimization alarm on v2: {alarm.reason}")
    svg = chart.value
    assert svg.count('class="point-claimed"') == 2 and svg.count('class="point-fresh"') == 2
    assert svg.count('class="alarm"') == 1 and ">v2</text>" in svg and 'font-weight="bold">v2' in svg
