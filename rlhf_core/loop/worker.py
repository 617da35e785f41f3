"""The worker: takes jobs from the `Job` table and runs them, one training job at a time.

It runs as `rlhf worker` (also started by `rlhf serve`), so training can happen on a GPU machine
while app servers share the same PostgreSQL. A killed worker's job is marked failed when a worker
starts again (or when its heartbeat goes stale); nothing already recorded is lost because every
version row is written only after its files exist.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from rlhf_core.models.stack import ModelStack
from rlhf_core.training.distributed import DataParallel
from rlhf_core.training.workspace_stack import load_stack
from rlhf_core.workspace import Workspace
from storage import (
    Database,
    Job,
    claim_next_job,
    enqueue_job,
    fail_job,
    fail_stale_jobs,
    finish_job,
    get_job,
    heartbeat_job,
    judgments_since_last_round,
    list_jobs,
    update_job_progress,
)

log = logging.getLogger(__name__)
ProgressFn = Callable[[float, str], None]


# -- the job kinds: one table the worker, the CLI and the operator page read (STYLE.md 12) ----------------
# Each runner takes (worker, job, params, on_progress) and returns the job's metrics; it imports its service
# when called, so a worker that never trains never loads the training code.
def _run_sample(w: Worker, job: Job, params: dict[str, Any], on_progress: ProgressFn) -> dict[str, Any]:
    from rlhf_core.loop.sampling import sample_pairs

    result = sample_pairs(w.ws, w.db, w.stack, n_pairs=params.get("pairs"), progress=w.progress,
                          on_progress=on_progress)
    return {"pairs": result.pairs, "samples": result.samples, "policy_version": result.policy_version}


def _run_train_rm(w: Worker, job: Job, params: dict[str, Any], on_progress: ProgressFn) -> dict[str, Any]:
    from rlhf_core.training.reward_service import run_reward_training

    rm = run_reward_training(w.ws, w.db, w.stack, job_id=job.id, progress=w.progress, on_progress=on_progress,
                             dp=w.dp)
    return {"reward_model_version": rm.id, "heldout_accuracy": rm.heldout_accuracy}


def _run_train_policy(w: Worker, job: Job, params: dict[str, Any], on_progress: ProgressFn) -> dict[str, Any]:
    from rlhf_core.training.policy import run_policy_training

    pv = run_policy_training(w.ws, w.db, w.stack, algo=params.get("algo"), job_id=job.id, progress=w.progress,
                             on_progress=on_progress, dp=w.dp)
    return {"policy_version": pv.id}


def _run_round(w: Worker, job: Job, params: dict[str, Any], on_progress: ProgressFn) -> dict[str, Any]:
    from rlhf_core.loop.rounds import run_round

    return run_round(w.ws, w.db, w.stack, algo=params.get("algo"), job_id=job.id, progress=w.progress,
                     on_progress=on_progress, dp=w.dp).metrics


def _run_eval_batch(w: Worker, job: Job, params: dict[str, Any], on_progress: ProgressFn) -> dict[str, Any]:
    from rlhf_core.loop.evaluation import create_eval_batch

    batch = create_eval_batch(w.ws, w.db, w.stack, n_prompts=params.get("prompts", 32), progress=w.progress)
    return {"policy_version": batch.policy_version, "pairs": len(batch.pair_ids)}


def _run_train_sft(w: Worker, job: Job, params: dict[str, Any], on_progress: ProgressFn) -> dict[str, Any]:
    from rlhf_core.training.sft import run_sft_training

    pv = run_sft_training(w.ws, w.db, w.stack, job_id=job.id, progress=w.progress, on_progress=on_progress)
    metrics = json.loads(pv.metrics_json)
    return {"policy_version": pv.id, **{k: metrics.get(k) for k in ("heldout_nll_before", "heldout_nll", "best_epoch")}}


def _follow_train_rm(w: Worker, params: dict[str, Any]) -> None:
    from rlhf_core.training.reward_service import run_reward_training

    run_reward_training(w.ws, w.db, w.stack, progress=False, dp=w.dp)


def _follow_policy(w: Worker, params: dict[str, Any], *, train_reward: bool) -> None:
    from rlhf_core.loop.rounds import follow_round

    follow_round(w.ws, w.db, w.stack, algo=params.get("algo"), dp=w.dp, train_reward=train_reward)


@dataclass(frozen=True)
class JobKind:
    """How the worker runs one kind of job. `trains`: training jobs run one at a time across all workers
    (storage's TRAINING_KINDS lists the same kinds, since storage imports nothing of rlhf_core). `follow`:
    a data-parallel non-main process's share (None: the main process does all of it, the others wait)."""

    run: Callable[[Worker, Job, dict[str, Any], ProgressFn], dict[str, Any]]
    trains: bool
    description: str
    follow: Callable[[Worker, dict[str, Any]], None] | None = None


JOB_KINDS: dict[str, JobKind] = {
    "sample": JobKind(_run_sample, False, "sample pairs from the current policy"),
    "train_rm": JobKind(_run_train_rm, True, "train the reward model", _follow_train_rm),
    "train_policy": JobKind(_run_train_policy, True, "update the policy (PPO, GRPO or DPO)",
                            partial(_follow_policy, train_reward=False)),
    "round": JobKind(_run_round, True, "a round: reward model, policy update, next pairs",
                     partial(_follow_policy, train_reward=True)),
    "eval_batch": JobKind(_run_eval_batch, False, "policy-vs-base pairs on eval prompts"),
    "train_sft": JobKind(_run_train_sft, True, "supervised fine-tuning on the demonstrations (stage 1)"),
}


def training_kinds() -> tuple[str, ...]:
    """The job kinds that train (and log per-step metrics), in the table's order."""
    return tuple(kind for kind, spec in JOB_KINDS.items() if spec.trains)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Worker:
    def __init__(self, ws: Workspace, db: Database, *, stack_factory: Callable[[Workspace], ModelStack] = load_stack,
                 poll_seconds: float = 2.0, heartbeat_seconds: float = 5.0, stale_after_seconds: float = 120.0,
                 progress: bool = False) -> None:
        self.ws, self.db = ws, db
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}"
        self._stack_factory = stack_factory
        self._stack: ModelStack | None = None
        self.poll_seconds = poll_seconds
        self.heartbeat_seconds = heartbeat_seconds
        self.stale_after_seconds = stale_after_seconds
        self.progress = progress
        self.dp = DataParallel()  # one process, or the processes `accelerate launch` started

    @property
    def stack(self) -> ModelStack:
        if self._stack is None:
            self._stack = self._stack_factory(self.ws)
        return self._stack

    # -- recovery and scheduling -------------------------------------------------------
    def recover(self) -> list[int]:
        """Fail jobs whose worker is gone: dead processes on this host at once, others by stale heartbeat."""
        host = socket.gethostname()
        failed = []
        for job in list_jobs(self.db, limit=200):
            if job.status != "running" or not job.worker_id or job.worker_id == self.worker_id:
                continue
            job_host, _, pid = job.worker_id.rpartition(":")
            if job_host == host and pid.isdigit() and not _pid_alive(int(pid)):
                fail_job(self.db, job.id, f"worker {job.worker_id} died while running this job; "
                                          f"retry with `rlhf jobs retry {job.id}`")
                failed.append(job.id)
        failed += fail_stale_jobs(self.db, self.stale_after_seconds)
        for job_id in failed:
            log.warning("job %d marked failed: its worker is gone", job_id)
        return failed

    def maybe_start_round(self) -> Job | None:
        """Automatic mode: queue a round once `loop.auto_round_every` new judgments have arrived."""
        every = self.ws.config.loop.auto_round_every
        if every <= 0 or judgments_since_last_round(self.db) < every:
            return None
        return enqueue_job(self.db, "round", {"trigger": "auto", "algo": self.ws.config.policy.algo})

    # -- running jobs ------------------------------------------------------------------
    def run_once(self) -> Job | None:
        """Claim and run one job; returns it (finished or failed), or None when the queue is empty."""
        if self.dp.enabled:
            return self._run_once_distributed()
        self.recover()
        self.maybe_start_round()
        job = claim_next_job(self.db, self.worker_id)
        if job is None:
            return None
        self.execute(job)
        return get_job(self.db, job.id)

    def _run_once_distributed(self) -> Job | None:
        """Under `accelerate launch`: the main process claims the job and tells the others, which join
        the data-parallel parts (reward-model training, policy updates) and otherwise wait for the main one."""
        job = None
        if self.dp.is_main:
            self.recover()
            self.maybe_start_round()
            job = claim_next_job(self.db, self.worker_id)
        job_id = self.dp.broadcast(None if job is None else job.id)
        if job_id is None:
            return None
        if self.dp.is_main:
            self.execute(job)
        else:
            self._follow(get_job(self.db, job_id))
        self.dp.barrier()
        return get_job(self.db, job_id)

    def _follow(self, job: Job) -> None:
        """A non-main process's share of a job (`JobKind.follow`): the reward-model training of `train_rm`
        and `round`, and the policy update of `train_policy` and `round`; the rest is the main one's."""
        spec = JOB_KINDS.get(job.kind)
        try:
            if spec is not None and spec.follow is not None:
                spec.follow(self, json.loads(job.params_json))
        except ValueError:  # missing data (too few judgments, no prompts): the main process records the error
            pass

    def run_forever(self, stop: threading.Event | None = None) -> None:
        stop = stop or threading.Event()
        log.info("worker %s polling %s", self.worker_id, self.db.display_url())
        while not stop.is_set():
            if self.run_once() is None:
                stop.wait(self.poll_seconds)

    def run_until_done(self, job_id: int, timeout: float | None = None) -> Job:
        """Run queued jobs (this one included) until job `job_id` has finished or failed."""
        deadline = None if timeout is None else time.time() + timeout
        while True:
            job = get_job(self.db, job_id)
            if job.status in ("done", "failed"):
                return job
            if deadline is not None and time.time() > deadline:
                raise TimeoutError(f"job {job_id} still {job.status} after {timeout} s")
            if self.run_once() is None:
                time.sleep(self.poll_seconds)

    def execute(self, job: Job) -> None:
        params = json.loads(job.params_json)
        stop_beat = threading.Event()
        beat = threading.Thread(target=self._heartbeat, args=(job.id, stop_beat), daemon=True)
        beat.start()
        last_report = [0.0]

        def on_progress(fraction: float, message: str) -> None:
            if time.time() - last_report[0] > 0.5 or fraction >= 1.0:
                last_report[0] = time.time()
                update_job_progress(self.db, job.id, fraction, message)

        try:
            metrics = self._dispatch(job, params, on_progress)
            finish_job(self.db, job.id, metrics)
            log.info("job %d (%s) done", job.id, job.kind)
        except Exception as exc:  # noqa: BLE001 - a failed job records its error and the worker goes on
            log.exception("job %d (%s) failed", job.id, job.kind)
            fail_job(self.db, job.id, f"{type(exc).__name__}: {exc}\n\n{traceback.format_exc(limit=8)}")
        finally:
            stop_beat.set()
            beat.join()

    def _heartbeat(self, job_id: int, stop: threading.Event) -> None:
        while not stop.wait(self.heartbeat_seconds):
            heartbeat_job(self.db, job_id)

    def _dispatch(self, job: Job, params: dict[str, Any], on_progress: ProgressFn) -> dict[str, Any]:
        spec = JOB_KINDS.get(job.kind)
        if spec is None:
            raise ValueError(f"unknown job kind {job.kind!r} (known: {', '.join(JOB_KINDS)})")
        return spec.run(self, job, params, on_progress)
