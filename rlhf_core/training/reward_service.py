"""The reward-model service: train the next reward model version of a workspace on its judgments.

Reads every judgment of training pairs (and of imported pairs with `reward.use_imported_pairs`; control pairs
never), people's and AI judges' alike (an AI judgment counts at most `reward.ai_weight`, and held-out figures and
the policy gate's evidence count people's only), adds the prior judgments of imported preference datasets to the
training side at `reward.prior_weight` each (never held out, unless there is nothing else), and so, with
`reward.use_edits`, the preferences "edited > original" of demonstrations written as edits on the labeling page,
leaves out annotators below `reward.min_annotator_accuracy` on control pairs, splits by prompt, trains (from
scratch, or from the current version with `reward.warm_start`), saves the adapter and only then records the
`RewardModelVersion` with its held-out accuracy, loss and calibration error.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rlhf_core.data.annotator_quality import low_accuracy_annotators, without_annotators
from rlhf_core.training.checkpoint import Checkpoint
from rlhf_core.training.crossfit import crossfit_accuracy
from rlhf_core.training.crowd_weights import (
    believed,
    known_judgments,
    prepare_crowd_training,
    reliability_after_training,
    reliability_metrics,
)
from rlhf_core.training.distributed import DataParallel
from rlhf_core.training.publish import publish_version
from rlhf_core.training.reward_data import (
    NotEnoughJudgmentsError,
    capped_ai_weight,
    edit_examples,
    people_held_out,
    preference_examples,
    prior_examples,
    split_by_prompt,
)
from rlhf_core.training.reward_model import train_reward_model
from rlhf_core.training.run_log import record_training_steps
from rlhf_core.training.workspace_stack import adapter_dir
from rlhf_core.workspace import Workspace
from storage import (
    Database,
    RewardModelVersion,
    add_reward_model_version,
    current_reward_model,
    demonstration_rows,
    judgment_rows,
    list_reward_models,
    prior_preference_rows,
)

MIN_DECISIVE_JUDGMENTS = 4


def run_reward_training(
    ws: Workspace, db: Database, stack, *, job_id: int | None = None, progress: bool = True,  # noqa: ANN001
    on_progress: Callable[[float, str], None] | None = None, dp: DataParallel | None = None,
) -> RewardModelVersion | None:
    """Train the next reward model on all train-pair judgments and record a new version.

    Raises NotEnoughJudgmentsError (a ValueError) when fewer than MIN_DECISIVE_JUDGMENTS a/b judgments
    exist. The adapter is saved to `adapter_dir(ws, "reward", n)` before the version row is written, so
    a row always points at a complete adapter. Per-step metrics go to the training logs under phase "reward".
    With `dp`, every process trains its share; only the main one saves and records (the others
    wait for it, then return None).
    """
    dp = dp or DataParallel(single=True)
    def report(fraction: float, message: str) -> None:
        if on_progress is not None and dp.is_main:
            on_progress(fraction, message)

    cfg = ws.config.reward
    started = time.perf_counter()
    report(0.0, "reading judgments")
    rows = judgment_rows(db, kinds=("train", "imported") if cfg.use_imported_pairs else ("train",))
    checkpoint = Checkpoint.for_job(ws, job_id, "reward") if dp.is_main else None
    if checkpoint is not None:  # a resumed training reads the judgments its first try read, not the newer ones
        until = checkpoint.saved_context().get("judgments_until")
        rows = [r for r in rows if until is None or r.judgment_id <= until]
        checkpoint.context["judgments_until"] = max((r.judgment_id for r in rows), default=0)
    left_out: set[str] = set()
    if cfg.min_annotator_accuracy > 0:
        left_out = low_accuracy_annotators(db, cfg.min_annotator_accuracy)
        rows = without_annotators(rows, left_out)
    examples, stats = preference_examples(rows, include_ties=cfg.ties == "davidson")
    stats["ai_judgments"] = sum(e.ai for e in examples)
    examples = capped_ai_weight(examples, cfg.ai_weight)  # AI judgments: at most reward.ai_weight each (0: none)
    priors = prior_examples(prior_preference_rows(db), cfg.prior_weight) if cfg.prior_weight > 0 else []
    stats["prior_judgments"] = len(priors)
    if cfg.use_edits:  # "edited > original" of demonstrations written as edits: training side only, as priors
        edits = edit_examples(demonstration_rows(db, edits_only=True))
        stats["edit_preferences"] = len(edits)
        priors = priors + edits
    decisive = sum(not ex.tie for ex in examples) + len(priors)
    if decisive < MIN_DECISIVE_JUDGMENTS:
        raise NotEnoughJudgmentsError(
            f"need at least {MIN_DECISIVE_JUDGMENTS} decisive (a/b) judgments to train a reward model, "
            f"have {decisive} ({stats['ties_excluded']} ties and {stats['both_bad_excluded']} both-bad "
            "excluded); collect more"
        )
    # Prior judgments only train: held-out figures measure the human judgments (priors alone: their own split).
    train, heldout = split_by_prompt(examples or priors, cfg.eval_fraction, cfg.seed)
    heldout = people_held_out(heldout)
    if examples:
        train += priors
    previous = current_reward_model(db)
    warm = cfg.warm_start and previous is not None

    def load_start() -> None:
        if warm:
            stack.load_adapter("reward", Path(previous.adapter_path))
        else:
            stack.reset_adapter("reward")

    load_start()
    crowd = None
    if cfg.annotator_model == "crowd_bt":  # CrowdBT: judgments weighted by their annotator's reliability
        report(0.01, "estimating annotator reliability")
        crowd = prepare_crowd_training(stack, db, train, heldout, cfg, previous, warm, ws.cache_dir)
        judged, train, heldout = train + heldout, capped_ai_weight(crowd.train, cfg.ai_weight), crowd.heldout
    report(0.02, "cross-fitting a probe on every judgment (the policy gate's evidence)")
    people = [e for e in examples if not e.ai] or examples  # the gate's evidence: agreement with people ...
    if crowd is not None:  # ... on the labels the annotator model believes, as held-out accuracy counts them
        people = believed(people, crowd.before)
    crossfit = None
    if dp.is_main:
        crossfit = crossfit_accuracy(stack, people, cfg, ws.cache_dir)  # resets the reward adapter
        load_start()
    def on_step(row: dict[str, float]) -> None:
        total = row["steps_total"]
        report(0.05 + 0.85 * row["step"] / total, f"step {row['step']}/{total}, loss {row['loss']:.3f}")

    report(0.05, f"training on {len(train)} judgments, {len(heldout)} held out"
                 + (f" (warm start from reward model v{previous.id})" if warm else ""))
    result = train_reward_model(stack, train, heldout, cfg, on_step=on_step, progress=progress and dp.is_main,
                                fresh_head=not warm, dp=dp, checkpoint=checkpoint)
    if not dp.is_main:
        dp.barrier()  # until the main process has recorded the version: a round's policy update reads it next
        return None
    annotators = {"annotator_model": cfg.annotator_model, "heldout_decisive": result.heldout.n,
                  "crossfit": {"right": crossfit.right, "n": crossfit.n, "believed": crowd is not None}}
    if crowd is not None:
        annotators |= reliability_metrics(crowd, reliability_after_training(stack, judged, cfg, known_judgments(db)))
    version_number = len(list_reward_models(db)) + 1
    report(0.92, f"saving reward model v{version_number}")
    directory = adapter_dir(ws, "reward", version_number)
    record_training_steps(ws, db, phase="reward", rows=result.history, job_id=job_id,
                          run=f"reward-v{version_number:04d}")
    metrics: dict[str, Any] = {
        **stats, "n_train": result.n_train, "n_heldout": result.n_heldout, "train_loss": result.train_loss,
        "steps": result.steps, "epochs": cfg.epochs, "best_epoch": result.best_epoch,
        "learning_rate": cfg.learning_rate, "ensemble": cfg.ensemble, "pooling": cfg.pooling,
        "feature_depths": list(cfg.feature_depths), "head_init": cfg.head_init, "probe_l2": result.probe_l2,
        "temperature": result.temperature,
        "warm_start_from": previous.id if warm else None, "ties": cfg.ties, "tie_log_nu": result.tie_log_nu,
        "heldout_calibration_error": result.heldout.calibration_error,
        "annotators_left_out": sorted(left_out), "seconds": round(time.perf_counter() - started, 3),
        "base_4bit": stack.quantized, "job_id": job_id,
        "resumed_from_step": checkpoint.resumed_from if checkpoint is not None else 0, **annotators,
    }
    version = publish_version(
        directory, lambda out: stack.save_adapter("reward", out), lambda: add_reward_model_version(
            db, adapter_path=str(directory), trained_on=result.n_train, heldout_accuracy=result.heldout_accuracy,
            heldout_loss=result.heldout_loss, metrics=metrics), f"reward model v{version_number}")
    dp.barrier()
    acc = "n/a" if result.heldout_accuracy is None else f"{result.heldout_accuracy:.3f}"
    report(1.0, f"reward model v{version_number} trained: held-out accuracy {acc}")
    return version
