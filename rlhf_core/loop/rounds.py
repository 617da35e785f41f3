"""The loop's orchestration: one round = retrain the reward model on all judgments, update the
policy against it, then sample the next pairs from the new policy.

A round moves the policy only on a reward model that is measurably better than chance (`policy_gate`,
`loop.min_reward_confidence`); otherwise it records why on the reward-model version, keeps the policy,
and samples the next pairs from it, so annotators go on judging and the next round has more to learn from."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rlhf_core.algorithms.agreement import wilson_interval
from rlhf_core.loop.sampling import sample_pairs
from rlhf_core.models.stack import ModelStack
from rlhf_core.training.distributed import DataParallel
from rlhf_core.training.policy import run_policy_training
from rlhf_core.training.reward_service import run_reward_training
from rlhf_core.training.sft import run_sft_training, sft_first_due
from rlhf_core.workspace import Workspace
from storage import (
    Database,
    RewardModelVersion,
    current_policy,
    current_reward_model,
    update_policy_metrics,
    update_reward_model_metrics,
)

ProgressFn = Callable[[float, str], None]


@dataclass
class RoundResult:
    policy_version: int
    reward_model_version: int
    new_pairs: int
    metrics: dict[str, Any]


@dataclass(frozen=True)
class PolicyGate:
    """Whether a round may update the policy on a reward model, and why (a sentence for people)."""

    open: bool
    reason: str
    lower_bound: float | None = None


def policy_gate(rm: RewardModelVersion, min_confidence: float) -> PolicyGate:
    """Open when the 95% Wilson lower bound of `rm`'s held-out accuracy, over its decisive held-out judgments,
    is above `min_confidence` (`loop.min_reward_confidence`; 0 opens it always). 31 right of 50 (62%) has
    the bound 48%: not measurably better than chance; 36 of 50 (72%): 58%, open."""
    if min_confidence <= 0:
        return PolicyGate(True, "no gate (loop.min_reward_confidence = 0)")
    metrics = json.loads(rm.metrics_json or "{}")
    n = int(metrics.get("heldout_decisive", metrics.get("n_heldout")) or 0)
    if rm.heldout_accuracy is None or n == 0:
        return PolicyGate(False, f"reward model v{rm.id} has no decisive held-out judgment to be measured on")
    correct = round(rm.heldout_accuracy * n)
    lower = wilson_interval(correct, n)[0]
    opened = lower > min_confidence
    return PolicyGate(opened, f"reward model v{rm.id}: held-out accuracy {correct}/{n} = {correct / n:.0%}, 95% "
                              f"lower bound {lower:.0%}, {'above' if opened else 'not above'} {min_confidence:.0%} "
                              "(loop.min_reward_confidence)", round(lower, 4))


def scaled(on_progress: ProgressFn | None, start: float, end: float, label: str) -> ProgressFn | None:
    """A progress callback for one phase that reports into the [start, end] slice of the whole."""
    if on_progress is None:
        return None
    return lambda fraction, message: on_progress(start + (end - start) * fraction, f"{label}: {message}")


def run_round(ws: Workspace, db: Database, stack: ModelStack, *, algo: str | None = None, job_id: int | None = None,
              sample_next: bool = True, progress: bool = True, on_progress: ProgressFn | None = None,
              dp: DataParallel | None = None) -> RoundResult:
    """Run the training half of a round now. A failure leaves the previous versions in place.

    With `dp` this is the main process's part; the other processes join both trainings through
    `follow_round` and leave the sampling to it."""
    started = round_started = time.time()
    report = on_progress or (lambda _f, _m: None)
    sft_metrics: dict[str, Any] = {}
    if sft_first_due(ws, db):  # stage 1 before the first round (loop.sft_first)
        report(0.0, "supervised fine-tuning on the demonstrations")
        sft = run_sft_training(ws, db, stack, job_id=job_id, progress=progress,
                               on_progress=scaled(on_progress, 0.0, 0.3, "sft"))
        started = time.time()
        sft_metrics = {"sft_version": sft.id, "sft_seconds": round(started - round_started, 3)}
    report(0.0, "training reward model")
    rm = run_reward_training(ws, db, stack, job_id=job_id, progress=progress,
                             on_progress=scaled(on_progress, 0.0, 0.3, "reward model"), dp=dp)
    reward_done = time.time()
    gate = policy_gate(rm, ws.config.loop.min_reward_confidence)
    update_reward_model_metrics(db, rm.id, {"policy_gate": {"open": gate.open, "reason": gate.reason,
                                                            "lower_bound": gate.lower_bound}})
    if not gate.open:  # keep the policy: sample the next pairs from it and let annotators go on
        return _gated_round(ws, db, stack, rm, gate, sample_next=sample_next, progress=progress,
                            on_progress=on_progress, seconds=time.time() - round_started)
    report(0.3, "updating policy")
    policy = run_policy_training(ws, db, stack, algo=algo, job_id=job_id, progress=progress,
                                 on_progress=scaled(on_progress, 0.3, 0.9, "policy"), dp=dp)
    # Where a round's time goes (the operator page and bench/loop_efficacy.py show it).
    round_metrics = {"rm_version": rm.id, "rm_heldout_accuracy": rm.heldout_accuracy,
                     "rm_heldout_loss": rm.heldout_loss, "rm_trained_on": rm.trained_on,
                     "reward_seconds": round(reward_done - started, 3),
                     "policy_seconds": round(time.time() - reward_done, 3), **sft_metrics}
    update_policy_metrics(db, policy.id, round_metrics)
    new_pairs = 0
    if sample_next:
        report(0.9, f"sampling pairs from policy v{policy.id}")
        new_pairs = sample_pairs(ws, db, stack, progress=progress,
                                 on_progress=scaled(on_progress, 0.9, 1.0, "sampling")).pairs
    metrics = {**round_metrics, "policy_version": policy.id, "new_pairs": new_pairs,
               "seconds": round(time.time() - round_started, 1)}
    report(1.0, f"round done: policy v{policy.id}")
    return RoundResult(policy_version=policy.id, reward_model_version=rm.id, new_pairs=new_pairs, metrics=metrics)


def _gated_round(ws: Workspace, db: Database, stack: ModelStack, rm: RewardModelVersion, gate: PolicyGate, *,
                 sample_next: bool, progress: bool, on_progress: ProgressFn | None, seconds: float) -> RoundResult:
    """The rest of a round whose gate closed: no policy update; the next pairs come from the current policy."""
    report = on_progress or (lambda _f, _m: None)
    policy = current_policy(db)
    report(0.9, f"policy not updated ({gate.reason}); sampling pairs from policy v{policy.id}")
    new_pairs = sample_pairs(ws, db, stack, progress=progress,
                             on_progress=scaled(on_progress, 0.9, 1.0, "sampling")).pairs if sample_next else 0
    metrics = {"rm_version": rm.id, "rm_heldout_accuracy": rm.heldout_accuracy, "rm_heldout_loss": rm.heldout_loss,
               "rm_trained_on": rm.trained_on, "reward_seconds": round(seconds, 3), "policy_updated": False,
               "policy_gate": gate.reason, "policy_version": policy.id, "new_pairs": new_pairs,
               "seconds": round(seconds, 1)}
    report(1.0, f"round done without a policy update: {gate.reason}")
    return RoundResult(policy_version=policy.id, reward_model_version=rm.id, new_pairs=new_pairs, metrics=metrics)


def follow_round(ws: Workspace, db: Database, stack: ModelStack, *, algo: str | None, dp: DataParallel,
                 train_reward: bool = True) -> None:
    """A non-main data-parallel process's share of a round (`train_reward`) or of a policy update: the
    same trainings as the main process's `run_round`, in the same order, recording nothing. SFT first
    (`loop.sft_first`) is the main process's alone; here it is only checked that there is data for it."""
    if train_reward:
        sft_first_due(ws, db)
        run_reward_training(ws, db, stack, progress=False, dp=dp)  # returns once the main process recorded it
        if not policy_gate(current_reward_model(db), ws.config.loop.min_reward_confidence).open:
            return  # the main process skips the policy update too
    run_policy_training(ws, db, stack, algo=algo, progress=False, dp=dp)
