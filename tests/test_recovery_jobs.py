"""Jobs recover on their own (issue 41), on SQLite and PostgreSQL: a job whose worker died is queued again after a
backoff, up to its bound of attempts, then fails with one line; `rlhf jobs list` and the console show the attempts;
`rlhf round --queue` only queues; and a real worker killed with SIGKILL mid-training is picked up by the next one,
which resumes the training from its checkpoint instead of from zero."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import storage
from rlhf_core.config import dump_config
from rlhf_core.loop.worker import Worker
from rlhf_core.service.actor import ActionRefused, Actor
from rlhf_core.service.dashboard import live_status
from rlhf_core.service.jobs import request_job
from rlhf_core.training.checkpoint import job_checkpoint_dir
from rlhf_core.workspace import Workspace, init_workspace

DEAD_PID = 2**22 + 12345  # above Linux's pid_max default: never a live process


def workspace_on(db: storage.Database, root: Path, **recovery: float) -> Workspace:
    """A workspace whose rlhf.toml points at `db` (so worker processes open the same database)."""
    ws, _ = init_workspace(root, db_url=db.url)
    for key, value in recovery.items():
        setattr(ws.config.recovery, key, value)
    ws.config_path.write_text(dump_config(ws.config))
    return ws


def rlhf(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rlhf_core", *args], capture_output=True, text=True, timeout=300,
                          env=dict(os.environ))


def test_a_dead_workers_job_is_queued_again_with_backoff_then_fails_at_its_bound(db, tmp_path: Path) -> None:
    ws = workspace_on(db, tmp_path / "ws", job_attempts=2, retry_backoff_s=0.3)
    job = storage.enqueue_job(db, "sample", {"pairs": 2}, max_attempts=ws.config.recovery.job_attempts)
    dead = f"{socket.gethostname()}:{DEAD_PID}"
    assert storage.claim_next_job(db, dead).attempts == 1
    worker = Worker(ws, db, stack_factory=lambda _ws: None)
    assert worker.recover() == [job.id]
    again = storage.get_job(db, job.id)
    assert again.status == "queued" and again.worker_id is None and again.error is None
    assert f"worker {dead} died" in again.message and "attempt 2 of 2" in again.message
    assert live_status(db)["recent_jobs"][0]["attempt"].startswith("2 of 2 at ")
    assert storage.claim_next_job(db, dead) is None  # the backoff: not before retry_at
    time.sleep(0.35)
    second = storage.claim_next_job(db, dead)
    assert second.id == job.id and second.attempts == 2 and second.message == "started again: attempt 2 of 2"
    assert worker.recover() == [job.id]  # died again: that was the last attempt
    failed = storage.get_job(db, job.id)
    assert failed.status == "failed" and "(attempt 2 of 2)" in failed.error
    assert f"rlhf jobs retry {job.id}" in failed.error
    listed = rlhf("jobs", "list", "--workspace", str(ws.root))
    assert listed.returncode == 0, listed.stderr
    header, row = listed.stdout.splitlines()[:2]
    assert "attempt" in header and "2 of 2" in row and "failed" in row


def test_a_stale_heartbeat_requeues_with_doubling_backoff(db, tmp_path: Path) -> None:
    job = storage.enqueue_job(db, "train_rm", max_attempts=3)
    storage.claim_next_job(db, "another-host:1")
    time.sleep(0.05)
    before = storage.utcnow()
    assert storage.recover_stale_jobs(db, stale_after_s=0, backoff_s=10) == [job.id]
    first = storage.get_job(db, job.id)
    assert first.status == "queued" and "stopped responding" in first.message
    assert 9 <= (first.retry_at - before).total_seconds() <= 11
    with db.session() as s:  # its backoff is over
        row = s.get(storage.Job, job.id)
        row.retry_at = storage.utcnow()
        s.add(row)
    storage.claim_next_job(db, "another-host:2")
    time.sleep(0.05)
    before = storage.utcnow()
    storage.recover_stale_jobs(db, stale_after_s=0, backoff_s=10)
    assert 19 <= (storage.get_job(db, job.id).retry_at - before).total_seconds() <= 21  # doubled


def test_round_queue_puts_a_round_on_the_queue_as_the_operator_button_does(db, tmp_path: Path, judged_pairs) -> None:
    ws = workspace_on(db, tmp_path / "ws", job_attempts=4)
    judged_pairs(db, 2, {"ann": True})
    out = rlhf("round", "--queue", "--workspace", str(ws.root))
    assert out.returncode == 0, out.stderr
    (job,) = storage.list_jobs(db)
    assert f"Job #{job.id} (round) queued" in out.stdout and "rlhf worker" in out.stdout
    assert job.status == "queued" and job.attempts == 0 and job.max_attempts == 4
    assert json.loads(job.params_json)["trigger"] == "cli"
    refused = rlhf("round", "--queue", "--workspace", str(ws.root))  # the page's rule: one round at a time
    assert refused.returncode == 1 and refused.stderr.startswith("error: A round is already under way: job #")
    assert len(refused.stderr.strip().splitlines()) == 1
    with pytest.raises(ActionRefused, match="already under way"):  # the operator page's path: the same rule
        request_job(ws, db, "round", {"algo": None}, Actor.operator("olga", "127.0.0.1"))


def test_a_killed_worker_is_picked_up_and_its_training_resumes_from_the_checkpoint(
        db, tmp_path: Path, tiny_model_dir: Path, judged_pairs) -> None:
    ws = workspace_on(db, tmp_path / "ws", job_attempts=3, retry_backoff_s=0.2, checkpoint_every=2)
    ws.config.model.name = str(tiny_model_dir)
    ws.config.reward.epochs, ws.config.reward.batch_size, ws.config.reward.max_length = 10, 4, 48
    ws.config.reward.early_stopping = False
    ws.config_path.write_text(dump_config(ws.config))
    judged_pairs(db, 12, {"ann": True})
    job = request_job(ws, db, "train_rm", {}, Actor.shell())
    checkpoint = job_checkpoint_dir(ws, job.id) / "reward.pt"
    proc = subprocess.Popen([sys.executable, "-m", "rlhf_core", "worker", "--workspace", str(ws.root), "--poll",
                             "0.1"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 240
        while not checkpoint.is_file() and time.time() < deadline and proc.poll() is None:
            time.sleep(0.02)
        assert checkpoint.is_file(), "the worker wrote no checkpoint"
        time.sleep(0.3)  # a few more steps, maybe another checkpoint
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert storage.get_job(db, job.id).status == "running"  # nobody has noticed yet
    saved = torch.load(checkpoint, weights_only=True)
    stopped_at = saved["trainer"]["step"]
    assert stopped_at >= 2 and storage.list_reward_models(db) == []

    done = Worker(ws, db, poll_seconds=0.05).run_until_done(job.id, timeout=600)
    assert done.status == "done", done.error
    assert done.attempts == 2
    (rm,) = storage.list_reward_models(db)
    metrics = json.loads(rm.metrics_json)
    assert metrics["resumed_from_step"] == stopped_at and metrics["job_id"] == job.id
    steps = [row["step"] for row in storage.training_logs(db, phase="reward", job_id=job.id)]
    assert steps == list(range(1, metrics["steps"] + 1)) and metrics["steps"] > stopped_at  # each step once, in order
    logged = {row["step"]: row["loss"] for row in storage.training_logs(db, phase="reward", job_id=job.id)}
    for row in saved["trainer"]["history"]:  # the steps before the kill are the first attempt's own
        assert logged[row["step"]] == pytest.approx(row["loss"])
    assert not job_checkpoint_dir(ws, job.id).exists()  # done: its checkpoints are gone
