"""The loop's orchestration: one round = score the current reward model on the judgments it never saw (fresh
accuracy), retrain the reward model on all judgments, re-score the current version's proxy gain with it and judge
that version (the over-optimization rule; with `loop.promote = "if_not_worse"` a version worse than its
predecessor stops being current), update the policy from the current version, measure the new version's claimed
proxy gain, then sample the next pairs from it (`loop.evidence`).

A round moves the policy only on evidence that a reward model beats chance (`policy_gate`,
`loop.min_reward_confidence`): the 95% Wilson lower bound over every decisive judgment, each predicted once by a
cross-fitted probe, plus the fresh judgments the previous reward model predicted. Otherwise it records why on the
reward-model version, keeps the policy, and samples the next pairs from it, so annotators go on judging and the
next round has more to learn from.

In verifiable mode (`loop.mode = "verifiable"`) a round is the policy update on the reward functions alone
(`verifiable_round`): no reward model, no gate, no judgments needed; the next pairs are still sampled, so people
can spot-check what the checks reward."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rlhf_core.algorithms.evidence import Accuracy
from rlhf_core.loop.evidence import (
    fresh_accuracy,
    judge_current_version,
    record_claimed_gain,
    record_fresh,
    record_rescored_gains,
)
from rlhf_core.loop.sampling import sample_pairs
from rlhf_core.models.stack import ModelStack
from rlhf_core.training.distributed import DataParallel
from rlhf_core.training.policy import run_policy_training
from rlhf_core.training.reward_service import run_reward_training
from rlhf_core.training.sft import run_sft_training, sft_first_due
from rlhf_core.training.workspace_stack import activate_reward_model
from rlhf_core.workspace import Workspace
from storage import (
    Database,
    RewardModelVersion,
    current_policy,
    current_reward_model,
    get_policy,
    list_policies,
    list_reward_models,
    update_policy_metrics,
    update_reward_model_metrics,
)

ProgressFn = Callable[[float, str], None]


@dataclass
class RoundResult:
    policy_version: int
    reward_model_version: int | None  # None: a verifiable round trains no reward model
    new_pairs: int
    metrics: dict[str, Any]


@dataclass(frozen=True)
class PolicyGate:
    """Whether a round may update the policy on a reward model, and why (a sentence for people)."""

    open: bool
    reason: str
    lower_bound: float | None = None


# Cross-fitted predictions share a fit with a fifth of the others, which correlates their errors: on labels with no
# signal their accuracy spreads 1.6-1.8 times the binomial variance (tests/test_evidence.py measures the gate's
# false-open rate), so the gate counts them at 1/CROSSFIT_DESIGN_EFFECT weight. Fresh judgments are predicted by one
# fixed model: plain binomial trials.
CROSSFIT_DESIGN_EFFECT = 2.0
# Counted on the labels CrowdBT believes (reward.annotator_model = "crowd_bt"), the kept judgments were chosen by
# reliability estimates fitted on the same features, which leans them towards the probe: on labels with no signal
# the gate then opened 2.7-3.2% of the time at weight 1/2 (tests/test_gate_believed.py), so they count at 1/3.
BELIEVED_DESIGN_EFFECT = 3.0


def policy_gate(rm: RewardModelVersion, min_confidence: float, fresh: Accuracy | None = None) -> PolicyGate:
    """Open when the 95% Wilson lower bound of the evidence is above `min_confidence` (`loop.min_reward_confidence`;
    0 opens it always). The evidence: `rm`'s cross-fitted accuracy over every decisive judgment (stored by its
    training; a version without it: its held-out accuracy), at 1/CROSSFIT_DESIGN_EFFECT weight, plus `fresh`, the
    previous reward model's accuracy on the judgments it never saw. 36 right of 50 held out (72%) has the bound
    58%: open; 31 of 50 (62%): 48%, not measurably better than chance."""
    if min_confidence <= 0:
        return PolicyGate(True, "no gate (loop.min_reward_confidence = 0)")
    metrics = json.loads(rm.metrics_json or "{}")
    crossfit = metrics.get("crossfit")
    if isinstance(crossfit, dict) and crossfit.get("n"):
        right, n = int(crossfit["right"]), int(crossfit["n"])
        believed = bool(crossfit.get("believed"))
        effect = BELIEVED_DESIGN_EFFECT if believed else CROSSFIT_DESIGN_EFFECT
        evidence = Accuracy(right / effect, n / effect)
        on = " on the labels CrowdBT believes" if believed else ""
        what = f"cross-fitted accuracy {right}/{n} = {right / n:.0%}{on} (at 1/{effect:g} weight)"
    else:
        n = int(metrics.get("heldout_decisive", metrics.get("n_heldout")) or 0)
        right = round(rm.heldout_accuracy * n) if rm.heldout_accuracy is not None else 0
        evidence, what = Accuracy(right, n), f"held-out accuracy {right}/{n}" + (f" = {right / n:.0%}" if n else "")
    if fresh is not None and fresh.n:
        evidence, what = evidence + fresh, f"{what} plus fresh accuracy {fresh.right}/{fresh.n} = {fresh.value:.0%}"
    if evidence.n == 0:
        return PolicyGate(False, f"reward model v{rm.id} has no decisive held-out judgment to be measured on")
    lower = evidence.interval[0]
    opened = lower > min_confidence
    return PolicyGate(opened, f"reward model v{rm.id}: {what}, 95% lower bound {lower:.0%}, "
                              f"{'above' if opened else 'not above'} {min_confidence:.0%} (loop.min_reward_confidence)",
                      round(lower, 4))


def stored_fresh(db: Database, rm: RewardModelVersion) -> Accuracy | None:
    """The fresh accuracy the round that trained `rm` measured on the reward model before it, if any."""
    before = [v for v in list_reward_models(db) if v.id < rm.id]
    figure = json.loads(before[-1].metrics_json or "{}").get("fresh") if before else None
    return Accuracy(int(figure["right"]), int(figure["n"])) if isinstance(figure, dict) and figure.get("n") else None


def scaled(on_progress: ProgressFn | None, start: float, end: float, label: str) -> ProgressFn | None:
    """A progress callback for one phase that reports into the [start, end] slice of the whole."""
    if on_progress is None:
        return None
    return lambda fraction, message: on_progress(start + (end - start) * fraction, f"{label}: {message}")


def published_by_job(versions: list[Any], job_id: int | None) -> Any | None:
    """The version (policy or reward model) an earlier attempt of job `job_id` published, or None: its metrics
    name the job."""
    if job_id is None:
        return None
    return next((v for v in versions if json.loads(v.metrics_json or "{}").get("job_id") == job_id), None)


def run_round(ws: Workspace, db: Database, stack: ModelStack, *, algo: str | None = None, job_id: int | None = None,
              sample_next: bool = True, progress: bool = True, on_progress: ProgressFn | None = None,
              dp: DataParallel | None = None) -> RoundResult:
    """Run the training half of a round now. A failure leaves the previous versions in place.

    A round job queued again after its worker died goes on where the earlier attempt stopped: a reward model or
    policy version it published is kept (not trained again), and a training under way resumes from its checkpoint.
    With `dp` this is the main process's part; the other processes join both trainings through
    `follow_round` and leave the sampling to it."""
    started = round_started = time.time()
    dp = dp or DataParallel(single=True)
    report = on_progress or (lambda _f, _m: None)
    sft_metrics: dict[str, Any] = {}
    if sft_first_due(ws, db):  # stage 1 before the first round (loop.sft_first)
        report(0.0, "supervised fine-tuning on the demonstrations")
        sft = run_sft_training(ws, db, stack, job_id=job_id, progress=progress,
                               on_progress=scaled(on_progress, 0.0, 0.3, "sft"))
        started = time.time()
        sft_metrics = {"sft_version": sft.id, "sft_seconds": round(started - round_started, 3)}
    if ws.config.loop.mode == "verifiable":
        return verifiable_round(ws, db, stack, algo=algo, job_id=job_id, sample_next=sample_next, progress=progress,
                                on_progress=on_progress, dp=dp, started=round_started, extra=sft_metrics)
    current, previous_rm = current_policy(db), current_reward_model(db)
    single = dp is None or not dp.enabled  # data-parallel rounds start over (their followers train again)
    rm = published_by_job(list_reward_models(db), job_id) if single else None
    policy = published_by_job([v for v in list_policies(db) if v.algorithm != "sft"], job_id) if single else None
    if policy is not None:  # an earlier attempt got as far as the new version: the round started from its parent
        current = get_policy(db, policy.parent_id)
    fresh = None
    if rm is not None:
        report(0.3, f"reward model v{rm.id} was trained by an earlier attempt of this job")
        fresh = stored_fresh(db, rm)
    else:
        if previous_rm is not None:  # before it is replaced: the judgments since it trained are fresh to it
            report(0.0, f"scoring reward model v{previous_rm.id} on the judgments it never saw")
            activate_reward_model(stack, db)
            fresh, on_version = fresh_accuracy(ws, db, stack, previous_rm, current)
            record_fresh(db, previous_rm, current, fresh, on_version)
        report(0.0, "training reward model")
        rm = run_reward_training(ws, db, stack, job_id=job_id, progress=progress,
                                 on_progress=scaled(on_progress, 0.0, 0.3, "reward model"), dp=dp)
    reward_done = time.time()
    if current.id and policy is None:  # the new reward model re-scores the current version's gain; the rules judge it
        report(0.3, f"re-scoring policy v{current.id}'s proxy gain with reward model v{rm.id}")
        record_rescored_gains(ws, db, stack, current)
        judge_current_version(ws, db, get_policy(db, current.id))
    dp.barrier()  # data-parallel followers read the current version only after a demotion
    gate = policy_gate(rm, ws.config.loop.min_reward_confidence, fresh)
    update_reward_model_metrics(db, rm.id, {"policy_gate": {"open": gate.open, "reason": gate.reason,
                                                            "lower_bound": gate.lower_bound}})
    if not gate.open and policy is None:  # keep the policy: sample the next pairs from it and let annotators go on
        return _gated_round(ws, db, stack, rm, gate, sample_next=sample_next, progress=progress,
                            on_progress=on_progress, seconds=time.time() - round_started)
    if policy is None:
        report(0.3, "updating policy")
        policy = run_policy_training(ws, db, stack, algo=algo, job_id=job_id, progress=progress,
                                     on_progress=scaled(on_progress, 0.3, 0.9, "policy"), dp=dp)
    report(0.88, f"measuring policy v{policy.id}'s proxy gain on the probe prompts")
    record_claimed_gain(ws, db, stack, get_policy(db, policy.id))
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


def verifiable_round(ws: Workspace, db: Database, stack: ModelStack, *, algo: str | None, job_id: int | None,
                     sample_next: bool, progress: bool, on_progress: ProgressFn | None, dp: DataParallel | None,
                     started: float, extra: dict[str, Any]) -> RoundResult:
    """A round of `loop.mode = "verifiable"`: the policy update scored by the reward functions alone, then the next
    pairs (for spot checks). No reward model is trained, and no judgment is needed."""
    report = on_progress or (lambda _f, _m: None)
    report(0.0, "updating policy on the reward functions")
    policy_started = time.time()
    policy = run_policy_training(ws, db, stack, algo=algo, job_id=job_id, progress=progress,
                                 on_progress=scaled(on_progress, 0.0, 0.9, "policy"), dp=dp)
    round_metrics = {"mode": "verifiable", "policy_seconds": round(time.time() - policy_started, 3), **extra}
    update_policy_metrics(db, policy.id, round_metrics)
    new_pairs = 0
    if sample_next:
        report(0.9, f"sampling pairs from policy v{policy.id} for spot checks")
        new_pairs = sample_pairs(ws, db, stack, progress=progress,
                                 on_progress=scaled(on_progress, 0.9, 1.0, "sampling")).pairs
    report(1.0, f"verifiable round done: policy v{policy.id}")
    metrics = {**round_metrics, "policy_version": policy.id, "new_pairs": new_pairs,
               "seconds": round(time.time() - started, 1)}
    return RoundResult(policy_version=policy.id, reward_model_version=None, new_pairs=new_pairs, metrics=metrics)


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
    if train_reward and ws.config.loop.mode != "verifiable":  # a verifiable round trains no reward model
        sft_first_due(ws, db)
        run_reward_training(ws, db, stack, progress=False, dp=dp)  # returns once the main process recorded it
        dp.barrier()  # while the main process judges the current version (it may demote it)
        rm = current_reward_model(db)
        if not policy_gate(rm, ws.config.loop.min_reward_confidence, stored_fresh(db, rm)).open:
            return  # the main process skips the policy update too
    run_policy_training(ws, db, stack, algo=algo, progress=False, dp=dp)
