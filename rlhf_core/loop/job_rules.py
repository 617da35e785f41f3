"""When a job request is refused: one rule per job kind (`rlhf_core.registry.JOB_KINDS` names them), the
same for `rlhf <command>`, the operator page and automatic rounds. Each takes (ws, db, params) and returns
a sentence saying why and what to do, or None when the job may be queued."""

from __future__ import annotations

from typing import Any

from rlhf_core.registry import UnknownKind, round_algorithm
from rlhf_core.workspace import Workspace
from storage import Database, Job, active_job, count_prompts, demonstration_counts, status_counts, step_label_counts

MAX_EVAL_PROMPTS = 1000
MAX_SAMPLE_PAIRS = 10_000


def describe(job: Job) -> str:
    """"job #3 (running, 40%)" or "job #3 (queued)"."""
    return f"job #{job.id} ({job.status}" + (f", {job.progress:.0%})" if job.status == "running" else ")")


def _under_way(db: Database, kind: str, what: str) -> str | None:
    pending = active_job(db, kind)
    if pending is None:
        return None
    return f"{what} is already under way: {describe(pending)}. Wait until it is done or failed."


def _algorithm(params: dict[str, Any]) -> str | None:
    algo = params.get("algo")
    if algo is None:
        return None
    try:
        round_algorithm(algo)
    except UnknownKind as exc:
        return str(exc).capitalize() + "."
    return None


def refuse_sample(ws: Workspace, db: Database, params: dict[str, Any]) -> str | None:
    pairs = params.get("pairs")
    if pairs is not None and not 1 <= int(pairs) <= MAX_SAMPLE_PAIRS:
        return f"Ask for between 1 and {MAX_SAMPLE_PAIRS} pairs."
    return None


def refuse_train_rm(ws: Workspace, db: Database, params: dict[str, Any]) -> str | None:
    return _under_way(db, "train_rm", "A reward-model training")


def refuse_train_policy(ws: Workspace, db: Database, params: dict[str, Any]) -> str | None:
    return _algorithm(params) or _under_way(db, "train_policy", "A policy update")


def refuse_round(ws: Workspace, db: Database, params: dict[str, Any]) -> str | None:
    if (bad := _algorithm(params)) is not None:
        return bad
    if status_counts(db)["counts"]["judgments"] == 0:
        return "No judgments yet: a round trains the reward model on judged pairs, so collect some first."
    return _under_way(db, "round", "A round")


def refuse_eval_batch(ws: Workspace, db: Database, params: dict[str, Any]) -> str | None:
    prompts = int(params.get("prompts", 32))
    if not 1 <= prompts <= MAX_EVAL_PROMPTS:
        return f"Ask for between 1 and {MAX_EVAL_PROMPTS} eval prompts."
    if status_counts(db)["versions"]["policy"] == 0:
        return "The current policy is the base model: run a round first, then compare it with the base."
    if count_prompts(db, split="eval") == 0:
        return "There are no eval prompts: import some with `rlhf prompts import FILE --split eval`."
    return _under_way(db, "eval_batch", "An evaluation batch")


NO_DEMONSTRATIONS = ("No demonstrations yet. Let annotators write them on the labeling page (`labeling.demonstrations"
                     " = \"optional\"` or `\"every_n\"` in rlhf.toml, then restart `rlhf serve`) or import a file: "
                     "`rlhf demos import FILE` (TRL's SFT formats).")


def refuse_train_sft(ws: Workspace, db: Database, params: dict[str, Any]) -> str | None:
    if demonstration_counts(db)["demonstrations"] == 0:
        return NO_DEMONSTRATIONS
    return _under_way(db, "train_sft", "SFT")


NO_STEP_LABELS = ("No step labels yet: set labeling.mode = \"steps\" (or name prompt sets in labeling.step_sets) in "
                  "rlhf.toml and let annotators label the steps of sampled responses, or run `rlhf simulate-steps`.")


def refuse_train_prm(ws: Workspace, db: Database, params: dict[str, Any]) -> str | None:
    if step_label_counts(db)["responses"] < 2:
        return NO_STEP_LABELS
    return _under_way(db, "train_prm", "A process-reward-model training")
