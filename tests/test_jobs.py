"""The job queue and the worker: ordering, one training job at a time, crash recovery."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

import storage
from rlhf_core.loop.worker import Worker
from rlhf_core.registry import training_kinds
from rlhf_core.workspace import init_workspace


def test_enqueue_is_unique_per_kind_while_pending(db) -> None:
    first = storage.enqueue_job(db, "round", {"algo": "grpo"})
    again = storage.enqueue_job(db, "round", {"algo": "ppo"})
    assert again.id == first.id
    other = storage.enqueue_job(db, "sample", {"pairs": 4})
    assert other.id != first.id


def test_only_one_training_job_runs_at_a_time(db) -> None:
    rm = storage.enqueue_job(db, "train_rm")
    policy = storage.enqueue_job(db, "train_policy")
    sample = storage.enqueue_job(db, "sample")
    kinds = training_kinds()  # the job table's, as the worker passes them
    claimed = storage.claim_next_job(db, "w1", training_kinds=kinds)
    assert claimed.id == rm.id and claimed.status == "running"
    # Another worker may sample meanwhile, but must not start a second training job.
    second = storage.claim_next_job(db, "w2", training_kinds=kinds)
    assert second.id == sample.id
    assert storage.claim_next_job(db, "w3", training_kinds=kinds) is None
    storage.finish_job(db, rm.id, {"ok": 1})
    assert storage.claim_next_job(db, "w3", training_kinds=kinds).id == policy.id


def test_stale_job_fails_and_can_be_retried(db) -> None:
    job = storage.enqueue_job(db, "train_rm")
    storage.claim_next_job(db, "gone-host:1")
    assert storage.recover_stale_jobs(db, stale_after_s=3600) == []
    time.sleep(0.05)
    assert storage.recover_stale_jobs(db, stale_after_s=0) == [job.id]
    failed = storage.get_job(db, job.id)
    assert failed.status == "failed" and "stopped responding" in failed.error
    retry = storage.retry_job(db, job.id)
    assert retry.status == "queued" and json.loads(retry.params_json)["retry_of"] == job.id
    with pytest.raises(storage.JobError):
        storage.retry_job(db, retry.id)


def test_failed_job_records_error_and_worker_goes_on(tmp_path) -> None:
    ws, _ = init_workspace(tmp_path / "ws")
    db = ws.database()

    def no_model(_ws):
        raise AssertionError("this job must fail before it needs a model")

    worker = Worker(ws, db, stack_factory=no_model, poll_seconds=0.01)
    bad = storage.enqueue_job(db, "no_such_kind")
    assert worker.run_once().status == "failed"
    assert "unknown job kind" in storage.get_job(db, bad.id).error
    assert worker.run_once() is None  # queue empty, worker still fine


def test_auto_round_after_n_judgments(tmp_path) -> None:
    ws, _ = init_workspace(tmp_path / "ws")
    ws.config.loop.auto_round_every = 2
    db = ws.database()
    worker = Worker(ws, db, stack_factory=lambda _ws: None)
    assert worker.maybe_start_round() is None
    user = storage.create_annotator(db, "ann", "password123")
    storage.add_prompts(db, [[{"role": "user", "content": f"p{i}"}] for i in range(2)])
    for p in storage.list_prompts(db):
        storage.record_generations(db, prompt_id=p.id, policy_version_id=0, responses=[("x", 1), ("y", 1)],
                                   gen_params={}, pairs=[(0, 1)])
    for _ in range(2):
        served = storage.next_pair_for(db, user.id)
        storage.record_judgment(db, pair_id=served.pair_id, annotator_id=user.id, choice="a")
    job = worker.maybe_start_round()
    assert job is not None and job.kind == "round"
    assert storage.judgments_since_last_round(db) == 0


def test_worker_killed_mid_job_is_marked_failed_on_restart(tmp_path, tiny_model_dir) -> None:
    ws, _ = init_workspace(tmp_path / "ws", model=str(tiny_model_dir))
    db = ws.database()
    user = storage.create_annotator(db, "ann", "password123")
    storage.add_prompts(db, [[{"role": "user", "content": f"question {i}"}] for i in range(400)])
    first = storage.list_prompts(db, limit=1)[0]
    storage.record_generations(db, prompt_id=first.id, policy_version_id=0, responses=[("x", 1), ("y", 1)],
                               gen_params={}, pairs=[(0, 1)])
    served = storage.next_pair_for(db, user.id)
    storage.record_judgment(db, pair_id=served.pair_id, annotator_id=user.id, choice="b")
    job = storage.enqueue_job(db, "sample", {"pairs": 2000})
    proc = subprocess.Popen([sys.executable, "-m", "rlhf_core", "worker", "--workspace", str(ws.root),
                             "--poll", "0.2"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            current = storage.get_job(db, job.id)
            if current.status == "running" and current.progress > 0:
                break
            time.sleep(0.2)
        assert storage.get_job(db, job.id).status == "running", "worker never started the job"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert storage.get_job(db, job.id).status == "running"  # nobody has noticed yet
    restarted = Worker(ws, db, stack_factory=lambda _ws: None)
    assert restarted.recover() == [job.id]
    failed = storage.get_job(db, job.id)
    assert failed.status == "failed" and "died" in failed.error
    counts = storage.status_counts(db)["counts"]
    assert counts["judgments"] == 1  # nothing recorded before the crash was lost
    assert storage.current_policy(db).id == 0  # the previous policy is still the one served
    assert storage.next_pair_for(db, user.id) is not None or counts["pairs_open"] == 0


def test_worker_until_empty_runs_every_queued_job_then_exits(tmp_path, tiny_model_dir) -> None:
    ws, _ = init_workspace(tmp_path / "ws", model=str(tiny_model_dir))
    db = ws.database()
    # No judgments and no reward model yet: each fails at once.
    jobs = [storage.enqueue_job(db, kind, {}) for kind in ("train_rm", "train_policy")]
    out = subprocess.run([sys.executable, "-m", "rlhf_core", "worker", "--until-empty", "--workspace", str(ws.root)],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert [storage.get_job(db, j.id).status for j in jobs] == ["failed", "failed"]
    assert out.stdout.splitlines()[-3:] == [f"job #{jobs[0].id} train_rm: failed",
                                            f"job #{jobs[1].id} train_policy: failed", "queue empty"]
