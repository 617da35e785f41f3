"""The process reward model's service: train the next PRM version of a workspace on its step labels
(`run_prm_training`, the `train_prm` job), load the current one into a stack (`activate_prm`), and use it as a
reward and a verifier (`PRMScorer`).

`PRMScorer` has TRL's reward-function signature, `scorer(prompts, completions, **columns) -> list[float | None]`
(prompts and completions as text or as chat messages), so it can stand where TRL or the loop takes a reward function:
each completion is cut into steps as the labeling page cuts it (`labeling.step_split`), scored at each step's end,
and its score is the minimum or the product of the step scores (`prm.aggregate`); a completion without steps gets
None ("does not apply"). `verify` says pass or fail at `prm.verify_threshold`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from rlhf_core.data.steps import split_steps
from rlhf_core.models.process_reward import PRM
from rlhf_core.models.stack import LoraSettings, ModelStack
from rlhf_core.training.prm import aggregate_steps, step_examples, step_probabilities, train_prm
from rlhf_core.training.run_log import record_training_steps
from rlhf_core.workspace import Workspace
from storage import Database, PRMVersion, add_prm_version, count_prm_versions, current_prm, step_label_rows

MIN_LABELED_RESPONSES = 2


class NoStepLabelsError(ValueError):
    """Too few step labels to train a PRM: the person's move is to collect more."""


def prm_dir(ws: Workspace, version: int) -> Path:
    return ws.adapters_dir / f"prm-v{version:04d}"


def run_prm_training(ws: Workspace, db: Database, stack: ModelStack, *, job_id: int | None = None,
                     progress: bool = True, on_progress: Callable[[float, str], None] | None = None) -> PRMVersion:
    """Train the next PRM on every step label and record it: its adapter and head are saved first, then the row
    (held-out step accuracy, loss, and the accuracy of always answering the commoner label beside it)."""
    def report(fraction: float, message: str) -> None:
        if on_progress is not None:
            on_progress(fraction, message)

    cfg = ws.config.prm
    started = time.perf_counter()
    examples = step_examples(step_label_rows(db), cfg.neutral)
    if len(examples) < MIN_LABELED_RESPONSES:
        raise NoStepLabelsError(f"need step labels on at least {MIN_LABELED_RESPONSES} responses to train a process "
                                f"reward model, have {len(examples)}; label steps on the labeling page "
                                "(labeling.mode = \"steps\") or run `rlhf simulate-steps`")

    def on_step(row: dict[str, float]) -> None:
        report(0.05 + 0.85 * row["step"] / row["steps_total"], f"step {row['step']}/{row['steps_total']}, "
                                                                f"loss {row['loss']:.3f}")

    report(0.01, f"training on the steps of {len(examples)} labeled responses")
    result = train_prm(stack, examples, cfg, on_step=on_step, progress=progress)
    number = count_prm_versions(db) + 1
    report(0.92, f"saving process reward model v{number}")
    directory = stack.save_adapter(PRM, prm_dir(ws, number))
    record_training_steps(ws, db, phase="prm", rows=result.history, job_id=job_id, run=f"prm-v{number:04d}")
    metrics: dict[str, Any] = {
        "labeled_responses": len(examples), "train_steps": result.train_steps, "heldout_steps": result.heldout_steps,
        "heldout_step_accuracy": result.heldout_accuracy, "heldout_loss": result.heldout_loss,
        "heldout_majority_accuracy": result.heldout_majority, "best_epoch": result.best_epoch, "epochs": cfg.epochs,
        "neutral": cfg.neutral, "learning_rate": cfg.learning_rate, "seconds": round(time.perf_counter() - started, 3),
    }
    version = add_prm_version(db, adapter_path=str(directory), trained_on=result.train_steps,
                              heldout_step_accuracy=result.heldout_accuracy, metrics=metrics)
    acc = "n/a" if result.heldout_accuracy is None else f"{result.heldout_accuracy:.3f}"
    report(1.0, f"process reward model v{version.id} trained: held-out step accuracy {acc}")
    return version


def activate_prm(ws: Workspace, db: Database, stack: ModelStack) -> int | None:
    """Load the newest PRM into the stack's `prm` adapter; its id, or None when none is trained yet."""
    version = current_prm(db)
    if version is None:
        return None
    cfg = ws.config.prm
    stack.enable_prm(LoraSettings(cfg.lora_r, cfg.lora_alpha), seed=cfg.seed)
    stack.load_adapter(PRM, Path(version.adapter_path))
    return version.id


def _messages(prompt: Any) -> list[dict[str, str]]:  # noqa: ANN401 - text or chat messages
    return [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)


def _text(completion: Any) -> str:  # noqa: ANN401 - text or chat messages
    return completion if isinstance(completion, str) else "".join(m["content"] for m in completion)


class PRMScorer:
    """The PRM as a reward function with TRL's signature, and as a verifier (see the module docstring)."""

    __name__ = "prm"  # TRL names a reward function's column by its __name__

    def __init__(self, ws: Workspace, stack: ModelStack) -> None:
        self.stack, self.labeling, self.cfg = stack, ws.config.labeling, ws.config.prm

    def steps(self, completion: str) -> list[str]:
        lab = self.labeling
        return split_steps(completion, lab.step_split, lab.step_separator, lab.max_steps)

    def step_scores(self, prompts: Sequence[Any], completions: Sequence[Any]) -> list[list[float]]:
        """P(right) of each step of each completion."""
        return step_probabilities(self.stack, [_messages(p) for p in prompts],
                                  [self.steps(_text(c)) for c in completions], max_length=self.cfg.max_length,
                                  batch_size=self.cfg.batch_size)

    def __call__(self, prompts: Sequence[Any], completions: Sequence[Any], **columns: Any) -> list[float | None]:
        return [aggregate_steps(s, self.cfg.aggregate) for s in self.step_scores(prompts, completions)]

    def verify(self, prompts: Sequence[Any], completions: Sequence[Any]) -> list[bool]:
        """Whether each completion passes: its score at least `prm.verify_threshold` (no steps: fails)."""
        return [s is not None and s >= self.cfg.verify_threshold for s in self(prompts, completions)]
