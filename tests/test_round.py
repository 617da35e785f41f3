"""A full round on a tiny model: pairs, simulated judgments, then reward model and policy update
through the job table and the worker; versions advance and metrics are stored."""

from __future__ import annotations

import json

import pytest

import storage
from rlhf_core.loop.worker import Worker
from rlhf_core.simulator.simulate import simulate_annotators
from rlhf_core.workspace import init_workspace


@pytest.fixture
def tiny_ws(tmp_path, tiny_model_dir, tiny_rounds):
    ws, _ = init_workspace(tmp_path / "ws", model=str(tiny_model_dir))
    tiny_rounds(ws.config)
    db = ws.database()
    # 16 prompts for 12 pairs: a prompt whose samples are identical or empty gives none.
    storage.add_prompts(db, [[{"role": "user", "content": f"say something about item {i}"}] for i in range(16)])
    storage.add_prompts(db, [[{"role": "user", "content": f"eval question {i}"}] for i in range(4)], split="eval")
    yield ws, db
    db.dispose()


@pytest.mark.parametrize("algo", ["grpo", "ppo"])
def test_full_round_through_jobs_and_worker(tiny_ws, algo) -> None:
    ws, db = tiny_ws
    worker = Worker(ws, db, poll_seconds=0.01)
    sample = worker.run_until_done(storage.enqueue_job(db, "sample", {"pairs": 12}).id, timeout=300)
    assert sample.status == "done", sample.error
    assert json.loads(sample.metrics_json)["pairs"] >= 12
    sim = simulate_annotators(db, annotators=2, judgments=12, gold="longer", seed=1, progress=False)
    assert sim.judgments == 12

    job = storage.enqueue_job(db, "round", {"algo": algo})
    done = worker.run_until_done(job.id, timeout=600)
    assert done.status == "done", done.error
    assert done.progress == 1.0

    assert storage.current_policy(db).id == 1
    assert storage.current_reward_model(db).id == 1
    policy = storage.get_policy(db, 1)
    metrics = json.loads(policy.metrics_json)
    assert policy.algorithm == algo and policy.round == 1 and policy.parent_id == 0
    for key in ("rm_heldout_accuracy", "reward_mean", "kl_per_token", "entropy", "response_length"):
        assert key in metrics, key
    # Where the round's time went: both trainings timed, within the job's own duration.
    assert 0 < metrics["reward_seconds"] and 0 < metrics["policy_seconds"]
    job_seconds = (done.finished_at - done.started_at).total_seconds()
    assert metrics["reward_seconds"] + metrics["policy_seconds"] <= job_seconds + 1
    if algo == "ppo":
        assert metrics["value_loss"] is not None
    logs = storage.training_logs(db, job_id=job.id)
    assert {row["phase"] for row in logs} == {"reward", "policy"}
    # The new policy sampled the next pairs.
    counts = storage.status_counts(db)
    assert counts["versions"] == {"policy": 1, "reward_model": 1}
    with db.session() as s:
        versions = {row.policy_version_id for row in s.exec(storage.Sample.__table__.select())}
    assert 1 in versions
    assert storage.open_pair_count(db) > 0


def test_failed_round_keeps_previous_versions(tiny_ws) -> None:
    ws, db = tiny_ws
    worker = Worker(ws, db, poll_seconds=0.01)
    job = storage.enqueue_job(db, "round", {})
    failed = worker.run_until_done(job.id, timeout=300)
    assert failed.status == "failed"
    assert "decisive" in failed.error  # too few judgments to train a reward model: says what to do
    assert storage.current_policy(db).id == 0 and storage.current_reward_model(db) is None
