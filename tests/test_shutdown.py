"""Stopping `rlhf serve` the ways systemd, docker and a terminal do: SIGTERM and Ctrl-C leave no
process behind (web server, worker, sampler), a worker outlives neither a killed serve nor its own
SIGTERM, and a job it was running is marked failed at once."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from browser_utils import free_port
from process_utils import answers, kill_session, log_match, rlhf_process, running, session_members, wait_for
from sqlmodel import select

import storage
from rlhf_core.config import dump_config
from rlhf_core.loop.pair_selection import distinct_responses
from rlhf_core.workspace import Workspace, init_workspace

STOP_WITHIN_S = 60


@pytest.fixture
def workspace(tmp_path: Path, tiny_model_dir: Path) -> Workspace:
    """Tiny model, 4000 prompts and a pool top-up large enough to be sampling for a long while."""
    ws, _ = init_workspace(tmp_path / "ws", model=str(tiny_model_dir))
    ws.config.sampling.pool_refill_pairs = 5000
    ws.config.sampling.max_new_tokens = 8
    ws.config_path.write_text(dump_config(ws.config))
    db = ws.database()
    storage.create_annotator(db, "olga", "password123", role="operator")
    storage.add_prompts(db, [[{"role": "user", "content": f"question {i}"}] for i in range(4000)])
    db.dispose()
    return ws


@pytest.fixture
def serve(workspace: Workspace, tmp_path: Path) -> Iterator[tuple]:
    """`rlhf serve` with its worker, up and answering, with the worker polling and the sampler running."""
    port, log = free_port(), tmp_path / "serve.log"
    proc = rlhf_process("serve", "--workspace", str(workspace.root), "--port", str(port), log=log)
    try:
        wait_for(lambda: answers(f"http://127.0.0.1:{port}/"), "serve answering", 180, proc, log)
        wait_for(lambda: log_match(log, r"Worker \S+ on "), "worker polling", 180, proc, log)
        db = workspace.database()
        wait_for(lambda: storage.open_pair_count(db) > 0, "pool top-up sampling", 180, proc, log)
        db.dispose()
        worker_pid = int(log_match(log, r"Started worker process (\d+)").group(1))
        assert running(worker_pid)
        yield proc, worker_pid, log
    finally:
        kill_session(proc.pid)
        proc.wait(10)


def orphan_samples(ws: Workspace) -> int:
    """Prompts whose samples could form a pair (two distinct non-empty texts) but have none: what a
    top-up cut in the middle of a prompt's write would leave. (Identical or empty responses are
    stored unpaired by design.)"""
    db = ws.database()
    with db.session() as s:
        texts: dict[int, list[str]] = {}
        for prompt_id, text in s.exec(select(storage.Sample.prompt_id, storage.Sample.text)).all():
            texts.setdefault(prompt_id, []).append(text)
        paired = set(s.exec(select(storage.Pair.prompt_id)).all())
    db.dispose()
    return sum(1 for prompt_id, mine in texts.items()
               if prompt_id not in paired and len(distinct_responses(mine)[0]) >= 2)


@pytest.mark.parametrize("how", ["SIGTERM to serve", "Ctrl-C to the process group"])
def test_stopping_serve_leaves_no_process(serve, workspace: Workspace, how: str) -> None:  # noqa: ANN001
    proc, worker_pid, log = serve
    if how == "SIGTERM to serve":
        proc.send_signal(signal.SIGTERM)
    else:
        os.killpg(proc.pid, signal.SIGINT)
    assert proc.wait(STOP_WITHIN_S) == 0, log.read_text()[-3000:]
    assert not running(worker_pid)
    assert session_members(proc.pid) == []
    out = log.read_text()
    assert "Stopped." in out and "worker stopped" in out and "Traceback" not in out
    assert "a pool top-up was sampling" in out  # the sampler was mid-run and ended with the process
    assert orphan_samples(workspace) == 0


def test_worker_exits_by_itself_when_serve_is_killed(serve) -> None:  # noqa: ANN001
    proc, worker_pid, log = serve
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    wait_for(lambda: not running(worker_pid), "worker exits after its serve died", 30, log=log)
    assert session_members(proc.pid) == []


def test_sigterm_to_a_busy_worker_marks_its_job_failed(workspace: Workspace, tmp_path: Path) -> None:
    db = workspace.database()
    job = storage.enqueue_job(db, "sample", {"pairs": 5000})
    log = tmp_path / "worker.log"
    proc = rlhf_process("worker", "--workspace", str(workspace.root), "--poll", "0.2", log=log)
    try:
        wait_for(lambda: storage.get_job(db, job.id).progress > 0, "worker running the job", 180, proc, log)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(STOP_WITHIN_S) == 0, log.read_text()[-3000:]
    finally:
        kill_session(proc.pid)
    failed = storage.get_job(db, job.id)
    assert failed.status == "failed" and "was stopped during this job" in failed.error
    assert f"rlhf jobs retry {job.id}" in failed.error
    db.dispose()
    assert orphan_samples(workspace) == 0
