"""Requesting jobs: the one path by which `rlhf <command>` and the operator page queue work for the worker.

A request names a job kind of `rlhf_core.registry.JOB_KINDS`; it is refused (`ActionRefused`, one sentence)
when the actor may not request that kind or when the kind's rule says no (`loop.job_rules`), and audited
once when queued.
"""

from __future__ import annotations

import json
from typing import Any

from rlhf_core.registry import JOB_KINDS, resolve
from rlhf_core.service.actor import ActionRefused, Actor, audit
from rlhf_core.workspace import Workspace
from storage import Database, Job, JobError, enqueue_job, retry_job

# The audit log's action per job kind (the names operators have read there since the first page).
AUDIT_ACTIONS = {"round": "start_round", "eval_batch": "eval_batch", "train_sft": "start_sft"}


def refusal(ws: Workspace, db: Database, kind: str, params: dict[str, Any], actor: Actor) -> str | None:
    """Why `actor` may not queue a `kind` job with `params` now, or None."""
    spec = JOB_KINDS.require(kind)
    if actor.via not in spec.requested_by:
        where = {"operator": "from the operator page", "cli": "from the command line", "auto": "automatically"}
        return f"A {kind} job cannot be requested {where.get(actor.via, 'by ' + actor.via)}."
    return None if spec.refuse is None else resolve(spec.refuse)(ws, db, params)


def request_job(ws: Workspace, db: Database, kind: str, params: dict[str, Any], actor: Actor) -> Job:
    """Queue a `kind` job with `params` for `actor`, or raise ActionRefused saying why not."""
    reason = refusal(ws, db, kind, params, actor)
    if reason is not None:
        raise ActionRefused(reason)
    stored = {**params, "trigger": actor.via}
    if actor.via == "operator":
        stored["requested_by"] = actor.name
    job = enqueue_job(db, kind, stored, max_attempts=ws.config.recovery.job_attempts)
    if json.loads(job.params_json) != stored:  # someone queued one between our check and now
        raise ActionRefused(f"A {kind} job was just queued by someone else: job #{job.id} ({job.status}).")
    audit(db, actor, AUDIT_ACTIONS.get(kind, f"queue_{kind}"), job=job.id,
          **{k: v for k, v in params.items() if v is not None})
    return job


def start_round(ws: Workspace, db: Database, algo: str | None, actor: Actor) -> Job:
    """Queue a round that updates the policy with `algo` (None: policy.algo)."""
    return request_job(ws, db, "round", {"algo": algo}, actor)


def queue_eval_batch(ws: Workspace, db: Database, prompts: int, actor: Actor) -> Job:
    """Queue policy-vs-base pairs on `prompts` eval prompts."""
    return request_job(ws, db, "eval_batch", {"prompts": prompts}, actor)


def start_sft(ws: Workspace, db: Database, actor: Actor) -> Job:
    """Queue supervised fine-tuning on the demonstrations."""
    return request_job(ws, db, "train_sft", {"algo": "sft"}, actor)


def retry(db: Database, job_id: int, actor: Actor) -> Job:
    """Queue a copy of failed job `job_id`."""
    try:
        job = retry_job(db, job_id)
    except JobError as exc:
        raise ActionRefused(str(exc)) from None
    audit(db, actor, "job_retry", job=job_id, new_job=job.id, kind=job.kind)
    return job
