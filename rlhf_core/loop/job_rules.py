"""When a job request is refused: one rule per job kind (`rlhf_core.registry.JOB_KINDS` names them), the
same for `rlhf <command>`, the operator page and automatic rounds. Each takes (ws, db, params) and returns
a sentence saying why and what to do, or None when the job may be queued."""

from __future__ import annotations

from typing import Any

from rlhf_core.registry import UnknownKind, round_algorithm
from rlhf_core.rewards import build_reward_functions, missing_columns
from rlhf_core.workspace import Workspace
from storage import (
    Database,
    Job,
    active_job,
    count_prompts,
    demonstration_counts,
    get_judge,
    prompt_column_names,
    status_counts,
    step_label_counts,
)

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


def reward_function_problem(ws: Workspace, db: Database, params: dict[str, Any]) -> str | None:
    """Why the configured reward functions cannot score this workspace's train prompts (an entry's prompt column
    that no train prompt has), or, in verifiable mode, why the requested algorithm cannot run; None when fine."""
    verifiable = ws.config.loop.mode == "verifiable"
    algo = params.get("algo") or ws.config.policy.algo
    if verifiable and not round_algorithm(algo).uses_rollouts:
        return (f'loop.mode = "verifiable" scores the policy\'s own samples, which {algo} does not draw: ask for '
                "grpo (or ppo).")
    if not ws.config.reward.functions:
        return None
    if count_prompts(db, split="train") == 0:
        return "There are no train prompts: import some with `rlhf prompts import FILE`."
    problem = missing_columns(build_reward_functions(ws.config.reward.functions), prompt_column_names(db, "train"))
    return problem[0].upper() + problem[1:] + "." if problem else None


def refuse_train_policy(ws: Workspace, db: Database, params: dict[str, Any]) -> str | None:
    return (_algorithm(params) or reward_function_problem(ws, db, params)
            or _under_way(db, "train_policy", "A policy update"))


def refuse_round(ws: Workspace, db: Database, params: dict[str, Any]) -> str | None:
    if (bad := _algorithm(params) or reward_function_problem(ws, db, params)) is not None:
        return bad
    if ws.config.loop.mode == "verifiable":  # the reward functions score the samples: no judgment is needed
        return _under_way(db, "round", "A round")
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


MAX_JUDGE_PAIRS = 100_000


def refuse_judge(ws: Workspace, db: Database, params: dict[str, Any]) -> str | None:
    name = params.get("judge")
    judge = get_judge(db, name) if name else None
    if judge is None:
        return f"No judge named {name!r}: add one with `rlhf judge add NAME --kind ...` (`rlhf judge list` shows them)."
    if not judge.active:
        return f"Judge {name!r} is disabled."
    pairs, requests = params.get("pairs"), params.get("max_requests")
    if pairs is not None and not 1 <= int(pairs) <= MAX_JUDGE_PAIRS:
        return f"Ask for between 1 and {MAX_JUDGE_PAIRS} pairs."
    if requests is not None and int(requests) < 2:
        return "Allow at least 2 requests: each pair is judged in both orders."
    return _under_way(db, "judge", "A judge run")
NO_STEP_LABELS = ("No step labels yet: set labeling.mode = \"steps\" (or name prompt sets in labeling.step_sets) in "
                  "rlhf.toml and let annotators label the steps of sampled responses, or run `rlhf simulate-steps`.")


def refuse_train_prm(ws: Workspace, db: Database, params: dict[str, Any]) -> str | None:
    if step_label_counts(db)["responses"] < 2:
        return NO_STEP_LABELS
    return _under_way(db, "train_prm", "A process-reward-model training")
