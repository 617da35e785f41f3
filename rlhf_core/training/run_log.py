"""The record of a training run: its per-step rows, stored in the database's training logs (the operator
page plots them) and, with `logging.report_to = "tensorboard"`, also written as TensorBoard event files
under `<workspace>/<logging.dir>/<run>` as the steps come, where practitioners used to TRL look; and
what a policy update returns, its history and the round summary stored with the policy version (the
operator page's rounds table reads its keys).

Each TensorBoard run gets its own folder (`policy-v0003-grpo-<UTC time>`, `reward-v0003-<UTC time>`),
so a retried job never mixes its curves into an earlier attempt's; tags are `<phase>/<metric>` and the
x axis is the run's step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlhf_core.workspace import Workspace
from storage import Database, add_training_logs, utcnow

TENSORBOARD_MISSING = ("logging.report_to = \"tensorboard\" needs the tensorboard package: "
                       "pip install 'rlhf-loop[tensorboard]' (or set report_to = \"none\" in rlhf.toml)")


def run_dir(ws: Workspace, run: str) -> Path:
    """Where the TensorBoard events of run `run` go: `<workspace>/<logging.dir>/<run>-<UTC time>`."""
    return ws.root / ws.config.logging.dir / f"{run}-{utcnow().strftime('%Y%m%dT%H%M%S')}"


def tensorboard_writer(directory: Path):  # noqa: ANN201 - torch's SummaryWriter, imported lazily
    """A `torch.utils.tensorboard.SummaryWriter` on `directory`; a one-line error when tensorboard is missing."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise ValueError(TENSORBOARD_MISSING) from None
    return SummaryWriter(log_dir=str(directory))


class StepLog:
    """The steps of one training run (`phase` "reward" or "policy"): `add` each row as it comes, `save`
    once at the end (the rows go to the database in one transaction, after the run succeeded)."""

    def __init__(self, ws: Workspace, phase: str, run: str) -> None:
        self.phase = phase
        self.rows: list[dict[str, Any]] = []
        self.directory: Path | None = None
        self._writer = None
        if ws.config.logging.report_to == "tensorboard":
            self.directory = run_dir(ws, run)
            self._writer = tensorboard_writer(self.directory)

    def add(self, row: dict[str, Any]) -> None:
        """Keep one step's metrics ("step" plus numbers; None where undefined) and write its numbers to TensorBoard."""
        self.rows.append(row)
        if self._writer is None:
            return
        step = int(row["step"])
        for key, value in row.items():
            if key != "step" and isinstance(value, (int, float)) and not isinstance(value, bool) \
                    and math.isfinite(value):
                self._writer.add_scalar(f"{self.phase}/{key}", value, global_step=step)

    def save(self, db: Database, job_id: int | None) -> None:
        add_training_logs(db, phase=self.phase, rows=self.rows, job_id=job_id)
        self.close()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def record_training_steps(ws: Workspace, db: Database, *, phase: str, rows: list[dict[str, Any]],
                          job_id: int | None, run: str) -> None:
    """Store the steps of a finished training run (and write them to TensorBoard when configured)."""
    log = StepLog(ws, phase, run)
    try:
        for row in rows:
            log.add(row)
        log.save(db, job_id)
    finally:
        log.close()


# Per-step metrics the round summary reports as the mean over the last quarter of the steps.
SUMMARY_KEYS = ("reward_mean", "reward_std", "kl_per_token", "kl_k3_per_token", "kl_exact_per_token", "kl_per_sequence",
                "kl_base_per_token", "kl_base_k3_per_token", "entropy", "response_length", "reward_length_corr",
                "clip_fraction", "approx_kl", "value_loss", "explained_variance", "kl_k3", "samples_per_s")


@dataclass
class PolicyTrainResult:
    history: list[dict[str, Any]]  # one row per step: "step" plus metrics (None where undefined)
    summary: dict[str, Any]


def finite(value: float | None) -> float | None:
    """JSON has no NaN: an undefined metric (e.g. explained variance of constant returns) is stored as null."""
    return value if value is not None and math.isfinite(value) else None


def show(value: float | None, digits: int) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def summarize(history: list[dict[str, Any]], seconds: float, keys: tuple[str, ...] = SUMMARY_KEYS) -> dict[str, Any]:
    """Round summary: each of `keys` averaged over the last quarter of the steps (at least one), which
    describes the policy being shipped with less noise than the final step alone."""
    tail = history[-max(1, math.ceil(len(history) / 4)):]
    summary: dict[str, Any] = {}
    components = dict.fromkeys(k for row in history for k in row if k.startswith("rewards/"))  # reward_scores'
    for key in (*keys, *components):
        values = [row[key] for row in tail if row.get(key) is not None]
        if values:
            summary[key] = sum(values) / len(values)
    summary["reward_mean_first"] = history[0].get("reward_mean") if history else None
    summary["steps"] = len(history)
    summary["stopped_at_kl"] = float(any(row.get("kl_stop") for row in history))
    summary["samples"] = sum(row["samples"] for row in history)
    summary["seconds"] = seconds
    return summary
