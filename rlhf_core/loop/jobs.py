"""What the worker does for each job kind (`rlhf_core.registry.JOB_KINDS` names these functions).

Each `run_*` takes (worker, job, params, on_progress) and returns the job's metrics; each `follow_*` is a
data-parallel non-main process's share (worker, params). They import their service when called, so a
worker that never trains never loads the training code. A training job queued again after its worker died
keeps a version an earlier attempt published (`rounds.published_by_job`) instead of training another.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from storage import Job, list_policies, list_reward_models

if TYPE_CHECKING:  # the worker imports this module's table entries lazily; no import cycle at run time
    from rlhf_core.loop.worker import Worker

ProgressFn = Callable[[float, str], None]


def run_sample(w: Worker, job: Job, params: dict[str, Any], on_progress: ProgressFn) -> dict[str, Any]:
    from rlhf_core.loop.sampling import sample_pairs

    result = sample_pairs(w.ws, w.db, w.stack, n_pairs=params.get("pairs"), progress=w.progress,
                          on_progress=on_progress)
    return {"pairs": result.pairs, "samples": result.samples, "policy_version": result.policy_version}


def run_train_rm(w: Worker, job: Job, params: dict[str, Any], on_progress: ProgressFn) -> dict[str, Any]:
    from rlhf_core.loop.rounds import published_by_job
    from rlhf_core.training.reward_service import run_reward_training

    rm = (not w.dp.enabled and published_by_job(list_reward_models(w.db), job.id)) or run_reward_training(
        w.ws, w.db, w.stack, job_id=job.id, progress=w.progress, on_progress=on_progress, dp=w.dp)
    return {"reward_model_version": rm.id, "heldout_accuracy": rm.heldout_accuracy}


def run_train_policy(w: Worker, job: Job, params: dict[str, Any], on_progress: ProgressFn) -> dict[str, Any]:
    from rlhf_core.loop.rounds import published_by_job
    from rlhf_core.training.policy import run_policy_training

    pv = (not w.dp.enabled and published_by_job(list_policies(w.db), job.id)) or run_policy_training(
        w.ws, w.db, w.stack, algo=params.get("algo"), job_id=job.id, progress=w.progress, on_progress=on_progress,
        dp=w.dp)
    return {"policy_version": pv.id}


def run_round(w: Worker, job: Job, params: dict[str, Any], on_progress: ProgressFn) -> dict[str, Any]:
    from rlhf_core.loop.rounds import run_round as round_now

    return round_now(w.ws, w.db, w.stack, algo=params.get("algo"), job_id=job.id, progress=w.progress,
                     on_progress=on_progress, dp=w.dp).metrics


def run_eval_batch(w: Worker, job: Job, params: dict[str, Any], on_progress: ProgressFn) -> dict[str, Any]:
    from rlhf_core.loop.evaluation import create_eval_batch

    batch = create_eval_batch(w.ws, w.db, w.stack, n_prompts=params.get("prompts", 32), progress=w.progress)
    return {"policy_version": batch.policy_version, "pairs": len(batch.pair_ids)}


def run_train_sft(w: Worker, job: Job, params: dict[str, Any], on_progress: ProgressFn) -> dict[str, Any]:
    from rlhf_core.loop.rounds import published_by_job
    from rlhf_core.training.sft import run_sft_training

    pv = published_by_job(list_policies(w.db), job.id) or run_sft_training(
        w.ws, w.db, w.stack, job_id=job.id, progress=w.progress, on_progress=on_progress)
    metrics = json.loads(pv.metrics_json)
    return {"policy_version": pv.id, **{k: metrics.get(k) for k in ("heldout_nll_before", "heldout_nll", "best_epoch")}}


def run_judge(w: Worker, job: Job, params: dict[str, Any], on_progress: ProgressFn) -> dict[str, Any]:
    """An AI judge's run; with labeling.route = "judge_uncertain" and a reward model, that model's margins on the
    open pairs tell routing where it and the judge disagree (the model stack loads only then)."""
    from rlhf_core.judges.run import run_judge as judge_now
    from storage import current_reward_model

    margins = None
    if w.ws.config.labeling.route == "judge_uncertain" and current_reward_model(w.db) is not None:
        def margins(pairs):  # noqa: ANN001, ANN202
            return reward_margins(w, pairs)

    return judge_now(w.ws, w.db, params["judge"], pairs=params.get("pairs"), max_requests=params.get("max_requests"),
                     margins=margins, on_progress=on_progress).metrics()


def reward_margins(w: Worker, pairs: list) -> dict[int, float]:  # noqa: ANN001 - storage.PairToJudge items
    """pair id -> the current reward model's score of a minus its score of b (the ensemble's mean)."""
    from rlhf_core.loop.pair_selection import response_member_scores
    from rlhf_core.training.workspace_stack import activate_reward_model

    if activate_reward_model(w.stack, w.db) is None:
        return {}
    convs, length = [p.prompt_messages for p in pairs], w.ws.config.reward.max_length
    a = response_member_scores(w.stack, convs, [p.text_a for p in pairs], max_length=length).mean(dim=1)
    b = response_member_scores(w.stack, convs, [p.text_b for p in pairs], max_length=length).mean(dim=1)
    return {p.pair_id: float(x - y) for p, x, y in zip(pairs, a.tolist(), b.tolist())}


def follow_train_rm(w: Worker, params: dict[str, Any]) -> None:
    from rlhf_core.training.reward_service import run_reward_training

    run_reward_training(w.ws, w.db, w.stack, progress=False, dp=w.dp)


def follow_policy_update(w: Worker, params: dict[str, Any]) -> None:
    from rlhf_core.loop.rounds import follow_round

    follow_round(w.ws, w.db, w.stack, algo=params.get("algo"), dp=w.dp, train_reward=False)


def follow_round_job(w: Worker, params: dict[str, Any]) -> None:
    from rlhf_core.loop.rounds import follow_round

    follow_round(w.ws, w.db, w.stack, algo=params.get("algo"), dp=w.dp, train_reward=True)


def run_train_prm(w: Worker, job: Job, params: dict[str, Any], on_progress: ProgressFn) -> dict[str, Any]:
    from rlhf_core.training.prm_service import run_prm_training

    version = run_prm_training(w.ws, w.db, w.stack, job_id=job.id, progress=w.progress, on_progress=on_progress)
    metrics = json.loads(version.metrics_json)
    return {"prm_version": version.id, **{k: metrics.get(k) for k in ("heldout_step_accuracy",
                                                                        "heldout_majority_accuracy", "train_steps")}}
