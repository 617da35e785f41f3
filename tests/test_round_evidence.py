"""A round's evidence on a tiny model, end to end through the worker: round 1 stores the gate's cross-fitted
evidence and the new version's claimed proxy gain (its probe answers written beside its adapter, the base's in the
cache); round 2 first scores reward model 1 on the judgments it never saw (fresh accuracy, on the reward model and
on v1), then has reward model 2 re-score v1's gain and v0's, and the rounds table and status show it. The gate
probe's base features go to the workspace's cache (tests/test_feature_cache.py)."""

from __future__ import annotations

import json
from pathlib import Path

import storage
from rlhf_core.loop.worker import Worker
from rlhf_core.service.dashboard import overoptimization_status, rounds_table
from rlhf_core.simulator.simulate import simulate_annotators
from rlhf_core.workspace import init_workspace


def test_two_rounds_leave_their_evidence(tmp_path: Path, tiny_model_dir: Path, tiny_rounds) -> None:  # noqa: ANN001
    ws, _ = init_workspace(tmp_path / "ws", model=str(tiny_model_dir))
    tiny_rounds(ws.config)
    ws.config.loop.promote = "always"  # this test reads the evidence; promotion has tests/test_rollback.py
    db = ws.database()
    storage.add_prompts(db, [[{"role": "user", "content": f"say something about item {i}"}] for i in range(16)])
    storage.add_prompts(db, [[{"role": "user", "content": f"eval question {i}"}] for i in range(4)], split="eval")
    worker = Worker(ws, db, poll_seconds=0.01)
    assert worker.run_until_done(storage.enqueue_job(db, "sample", {"pairs": 12}).id, timeout=300).status == "done"
    simulate_annotators(db, annotators=2, judgments=12, gold="longer", seed=1, progress=False)
    first = worker.run_until_done(storage.enqueue_job(db, "round", {}).id, timeout=600)
    assert first.status == "done", first.error

    rm1 = storage.current_reward_model(db)
    crossfit = json.loads(rm1.metrics_json)["crossfit"]
    assert 0 < crossfit["n"] <= 12 and 0 <= crossfit["right"] <= crossfit["n"]
    v1 = storage.get_policy(db, 1)
    assert isinstance(json.loads(v1.metrics_json)["claimed_gain"], float)
    probe = json.loads((Path(v1.adapter_path) / "probe.json").read_text())
    assert len(probe["prompt_ids"]) == len(probe["answers"]) == 4  # loop.probe_prompts eval prompts
    assert (ws.cache_dir / "base-probe.json").is_file()
    (features,) = ws.cache_dir.glob("base-features-*.pt")  # the gate probe's base features, for the next rounds

    simulate_annotators(db, annotators=2, judgments=10, gold="longer", seed=2, progress=False)
    second = worker.run_until_done(storage.enqueue_job(db, "round", {}).id, timeout=600)
    assert second.status == "done", second.error
    assert list(ws.cache_dir.glob("base-features-*.pt")) == [features]
    fresh = json.loads(storage.get_reward_model(db, 1).metrics_json)["fresh"]
    assert fresh["n"] > 0 and fresh["policy_version"] == 1 and 0 <= fresh["accuracy"] <= 1
    v1 = json.loads(storage.get_policy(db, 1).metrics_json)
    assert v1["fresh"]["reward_model"] == 1 and v1["fresh"]["n"] <= fresh["n"]
    assert isinstance(v1["rescored_gain"], float) and v1["rescored_predecessor_gain"] == 0.0  # v0 is the base
    rows = {r["version"]: r for r in rounds_table(db)}
    assert rows[1]["rescored_gain"] == v1["rescored_gain"] and rows[2]["current"]
    assert rows[1]["sqrt_kl"] is not None and rows[0]["sqrt_kl"] == 0.0
    assert overoptimization_status(db)["version"] == 2
    db.dispose()
