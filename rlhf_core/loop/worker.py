"""The worker: takes jobs from the `Job` table and runs them, one training job at a time.

It runs as `rlhf worker` (also started by `rlhf serve`), so training can happen on a GPU machine
while app servers share the same PostgreSQL. A killed worker's job is queued again when a worker
starts (or when its heartbeat goes stale), after a backoff and up to `recovery.job_attempts` starts in
all, then marked failed; a training resumes from its last checkpoint (`training.checkpoint`). Nothing
already recorded is lost because every version row is written only after its files exist.
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
from contextlib import suppress
from typing import Any

from sqlalchemy.exc import OperationalError

from rlhf_core.loop.job_rules import refuse_judge, refuse_round
from rlhf_core.models.stack import ModelStack
from rlhf_core.registry import JOB_KINDS, resolve, training_kinds
from rlhf_core.training.checkpoint import remove_checkpoints
from rlhf_core.training.distributed import DataParallel
from rlhf_core.training.workspace_stack import load_stack
from rlhf_core.workspace import Workspace
from storage import (
    Database,
    Job,
    claim_next_job,
    connection_error_reason,
    enqueue_job,
    fail_job,
    finish_job,
    get_job,
    heartbeat_job,
    judgments_since_last_round,
    list_jobs,
    list_judges,
    pairs_for_judge,
    recover_stale_jobs,
    requeue_or_fail,
    update_job_progress,
)

log = logging.getLogger(__name__)
ProgressFn = Callable[[float, str], None]


DB_RETRY_SECONDS = 2.0
DB_OUTAGE_SECONDS = 300.0  # how long a finished job waits for its database to record the outcome


def _until_reachable(write: Callable[[], Any]) -> Any:
    """Record a job's outcome, waiting out a database restart (then giving up: its heartbeat goes stale and the
    job is queued again)."""
    deadline = time.monotonic() + DB_OUTAGE_SECONDS
    while True:
        try:
            return write()
        except OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(DB_RETRY_SECONDS)


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
    def backoff(self) -> float:
        """Seconds a job queued again waits before its next attempt (doubling per attempt)."""
        return self.ws.config.recovery.retry_backoff_s

    @property
    def stack(self) -> ModelStack:
        if self._stack is None:
            self._stack = self._stack_factory(self.ws)
        return self._stack

    # -- recovery and scheduling -------------------------------------------------------
    def recover(self) -> list[int]:
        """Jobs whose worker is gone (dead processes on this host at once, others by stale heartbeat): queued
        again while they have attempts left (`recovery.retry_backoff_s` doubling), else marked failed."""
        host, backoff = socket.gethostname(), self.backoff
        recovered = []
        for job in list_jobs(self.db, limit=200):
            if job.status != "running" or not job.worker_id or job.worker_id == self.worker_id:
                continue
            job_host, _, pid = job.worker_id.rpartition(":")
            if job_host == host and pid.isdigit() and not _pid_alive(int(pid)):
                if requeue_or_fail(self.db, job.id, f"worker {job.worker_id} died while running this job", backoff):
                    recovered.append(job.id)
        recovered += recover_stale_jobs(self.db, self.stale_after_seconds, backoff)
        for job_id in recovered:
            log.warning("job %d: its worker is gone; %s", job_id, get_job(self.db, job_id).status)
        return recovered

    def maybe_start_round(self) -> Job | None:
        """Automatic mode: queue a round once `loop.auto_round_every` new judgments have arrived."""
        every = self.ws.config.loop.auto_round_every
        if every <= 0 or judgments_since_last_round(self.db) < every:
            return None
        params = {"trigger": "auto", "algo": self.ws.config.policy.algo}
        if refuse_round(self.ws, self.db, params) is not None:  # the rules a person's request meets
            return None
        return enqueue_job(self.db, "round", params, max_attempts=self.ws.config.recovery.job_attempts)

    def maybe_run_judges(self) -> Job | None:
        """`judges.auto_run`: queue a run of the first active judge that has open or control pairs left to judge,
        unless its last run failed (a failing endpoint waits for a person, not for the next poll)."""
        judges = list_judges(self.db) if self.ws.config.judges.auto_run else []
        recent = [j for j in list_jobs(self.db, limit=200) if j.kind == "judge"] if judges else []
        for judge in judges:
            if not judge.active:
                continue
            last = next((j for j in recent if json.loads(j.params_json).get("judge") == judge.name), None)
            if last is not None and last.status in ("queued", "running", "failed"):
                continue
            todo = pairs_for_judge(self.db, judge.annotator_id, 1)
            if not todo or not (todo[0].open or todo[0].kind == "control"):
                continue
            params = {"judge": judge.name, "trigger": "auto"}
            if refuse_judge(self.ws, self.db, params) is None:  # the rules a person's request meets
                return enqueue_job(self.db, "judge", params)
        return None

    # -- running jobs ------------------------------------------------------------------
    def run_once(self) -> Job | None:
        """Claim and run one job; returns it (finished or failed), or None when the queue is empty."""
        if self.dp.enabled:
            return self._run_once_distributed()
        self.recover()
        self.maybe_start_round()
        self.maybe_run_judges()
        job = claim_next_job(self.db, self.worker_id, training_kinds=training_kinds())
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
            self.maybe_run_judges()
            job = claim_next_job(self.db, self.worker_id, training_kinds=training_kinds())
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
                resolve(spec.follow)(self, json.loads(job.params_json))
        except ValueError:  # missing data (too few judgments, no prompts): the main process records the error
            pass

    def run_forever(self, stop: threading.Event | None = None) -> None:
        """Poll and run jobs until `stop`; a database that goes away for a while (a restart) is waited for."""
        stop = stop or threading.Event()
        log.info("worker %s polling %s", self.worker_id, self.db.display_url())
        while not stop.is_set():
            try:
                job = self.run_once()
            except OperationalError as exc:
                log.warning("database unreachable (%s); polling again in %.0f s", exc.orig, DB_RETRY_SECONDS)
                stop.wait(DB_RETRY_SECONDS)
                continue
            if job is None:
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
                with suppress(OperationalError):  # progress is for people; a database restart does not stop training
                    update_job_progress(self.db, job.id, fraction, message)

        ended = True  # done or failed for good; a job queued again keeps its checkpoints
        try:
            metrics = self._dispatch(job, params, on_progress)
            _until_reachable(lambda: finish_job(self.db, job.id, metrics))
            log.info("job %d (%s) done", job.id, job.kind)
        except OperationalError as exc:  # the database went away mid-job: not the job's fault, so like a dead worker
            log.warning("job %d (%s): the database went away (%s)", job.id, job.kind, exc.orig)
            why, backoff = f"the database went away during this job ({connection_error_reason(exc)})", self.backoff
            after = _until_reachable(lambda: requeue_or_fail(self.db, job.id, why, backoff))
            ended = after is None or after.status == "failed"
        except Exception as exc:  # noqa: BLE001 - a failed job records its error and the worker goes on
            log.exception("job %d (%s) failed", job.id, job.kind)
            error = f"{type(exc).__name__}: {exc}\n\n{traceback.format_exc(limit=8)}"
            _until_reachable(lambda: fail_job(self.db, job.id, error))
        finally:
            stop_beat.set()
            beat.join()
        if ended:  # a later try (`rlhf jobs retry`) starts afresh
            remove_checkpoints(self.ws, job.id)

    def _heartbeat(self, job_id: int, stop: threading.Event) -> None:
        while not stop.wait(self.heartbeat_seconds):
            with suppress(OperationalError):  # the next beat reaches a restarted database
                heartbeat_job(self.db, job_id)

    def _dispatch(self, job: Job, params: dict[str, Any], on_progress: ProgressFn) -> dict[str, Any]:
        return resolve(JOB_KINDS.require(job.kind).run)(self, job, params, on_progress)
