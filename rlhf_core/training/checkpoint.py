"""Training checkpoints, so a job whose worker died resumes where it stopped instead of from zero.

A trainer (reward model, PPO/GRPO, DPO, SFT) writes one file per job and phase every `recovery.checkpoint_every`
steps: the values of every parameter its optimizer trains (the LoRA weights, heads and any extra scalar such as
Davidson's tie parameter) and the buffers of its heads, the optimizer's state, the random states (Python's
`random.Random` of the data order, torch's global CPU and CUDA generators and any generator of its own), the steps
done with their logged rows, and what else the trainer names (its batch schedule: the data order; an early-stopping
snapshot). The file is written to a temporary name, flushed to disk and renamed over the previous one, so a kill at
any moment leaves the last complete checkpoint. A failed write (a full disk) is logged and training goes on.

A checkpoint is resumed only by a training of the same inputs (`fingerprint`: the examples or prompts, the
settings, and what the service fixed for the job in `Checkpoint.context`, such as the judgments it read up to);
otherwise the training starts over and says so. Resuming restores the exact numbers: a resumed run's loss goes on
as the uninterrupted run's would have (tests/test_recovery_training.py). Data-parallel runs do not checkpoint.
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
import shutil
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from rlhf_core.workspace import Workspace

log = logging.getLogger(__name__)
CHECKPOINTS_DIR = "checkpoints"
FORMAT = 1


def job_checkpoint_dir(ws: Workspace, job_id: int) -> Path:
    return ws.root / CHECKPOINTS_DIR / f"job-{job_id:06d}"


def remove_checkpoints(ws: Workspace, job_id: int) -> None:
    """A job is done or failed for good: its checkpoints go (a later try of it starts afresh)."""
    shutil.rmtree(job_checkpoint_dir(ws, job_id), ignore_errors=True)


def fingerprint(*parts: Any) -> str:
    """A short hash of what a training learns from (dataclass reprs, numbers, strings), in order."""
    digest = hashlib.sha256()
    for part in parts:
        digest.update(repr(part).encode("utf-8"))
        digest.update(b"\0")
    return digest.hexdigest()[:32]


@dataclass
class Checkpoint:
    """Where one phase of one job keeps its checkpoint (`path`), every how many steps it writes one, and
    `context`: what the service fixed for this training (a version, a data cut-off), kept in the file and part of
    what a resume must match."""

    path: Path
    every: int
    context: dict[str, Any] = field(default_factory=dict)
    resumed_from: int = 0  # the step a training resumed at (0: it started from zero)
    _saved: dict[str, Any] | None = field(default=None, repr=False)
    _read: bool = field(default=False, repr=False)

    @classmethod
    def for_job(cls, ws: Workspace, job_id: int | None, phase: str) -> Checkpoint | None:
        """The checkpoint of `phase` ("reward", "policy", "sft") of job `job_id`; None without a job or with
        `recovery.checkpoint_every = 0`."""
        every = ws.config.recovery.checkpoint_every
        if job_id is None or every <= 0:
            return None
        return cls(job_checkpoint_dir(ws, job_id) / f"{phase}.pt", every)

    def saved(self) -> dict[str, Any] | None:
        """The checkpoint on disk (read once), or None when there is none or it cannot be read."""
        if not self._read:
            self._read = True
            if self.path.is_file():
                try:
                    self._saved = torch.load(self.path, map_location="cpu", weights_only=True)
                except Exception as exc:  # noqa: BLE001 - a damaged file is no checkpoint; training starts over
                    log.warning("checkpoint %s cannot be read (%s); starting over", self.path, exc)
        return self._saved

    def saved_context(self) -> dict[str, Any]:
        """The `context` the checkpoint on disk was written with ({} without one)."""
        return dict((self.saved() or {}).get("context") or {})

    def write(self, state: dict[str, Any]) -> bool:
        """Write `state` atomically (temporary file, fsync, rename); False (logged) when the disk refused."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        try:
            with open(tmp, "wb") as out:
                torch.save({**state, "format": FORMAT, "context": self.context}, out)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, self.path)
        except Exception as exc:  # noqa: BLE001 - a full disk (torch.save raises its own error for it): train on
            tmp.unlink(missing_ok=True)
            log.warning("checkpoint %s not written (%s); training goes on without it", self.path, exc)
            return False
        return True


def _rng_states(rng: random.Random | None, generators: Sequence[torch.Generator | None]) -> dict[str, Any]:
    python = None
    if rng is not None:
        version, internal, gauss = rng.getstate()
        python = [version, list(internal), gauss]
    return {"python": python, "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "generators": [None if g is None else g.get_state() for g in generators]}


def _restore_rng(states: dict[str, Any], rng: random.Random | None, generators: Sequence[torch.Generator | None]
                 ) -> None:
    if rng is not None and states.get("python") is not None:
        version, internal, gauss = states["python"]
        rng.setstate((version, tuple(internal), gauss))
    torch.set_rng_state(states["torch"])
    if states.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
    for generator, state in zip(generators, states.get("generators") or []):
        if generator is not None and state is not None:
            generator.set_state(state)


def adapter_snapshot(stack: Any, name: str) -> dict[str, torch.Tensor]:
    """A copy of adapter `name`'s LoRA weights and its head's state (an early-stopping candidate), on the CPU."""
    state = {f"lora.{k}": v for k, v in stack._adapter_state(name).items()}
    if name in stack.heads:
        state.update({f"head.{k}": v.detach().cpu().clone() for k, v in stack.heads[name].state_dict().items()})
    return state


def restore_snapshot(stack: Any, name: str, state: dict[str, torch.Tensor]) -> None:
    """Put an `adapter_snapshot` back into adapter `name` and its head."""
    from peft import set_peft_model_state_dict

    lora = {k[len("lora."):]: v.to(stack.device) for k, v in state.items() if k.startswith("lora.")}
    set_peft_model_state_dict(stack.model, lora, adapter_name=name)
    head = {k[len("head."):]: v for k, v in state.items() if k.startswith("head.")}
    if head:
        stack.heads[name].load_state_dict(head)


def candidate_state(best: tuple[float, int, dict[str, torch.Tensor] | None, Any]) -> dict[str, Any]:
    """An early-stopping candidate (held-out loss, epoch, snapshot or None, figures dataclass or None) as a
    checkpoint keeps it: plain values and tensors."""
    loss, epoch, snapshot, figures = best
    return {"loss": loss, "epoch": epoch, "snapshot": snapshot, "figures": None if figures is None else asdict(figures)}


def candidate_from_state(state: dict[str, Any], figures_type: type) -> tuple[float, int, Any, Any]:
    figures = None if state["figures"] is None else figures_type(**state["figures"])
    return state["loss"], state["epoch"], state["snapshot"], figures


class Tracked:
    """One training's checkpointing: `resume()` once before the first step, `step_done(step, ...)` after each.

    `optimizer`'s parameters (every trainable value), the buffers of `heads` of `stack`, the optimizer's state
    and the random states of `rng` and `generators` are saved and restored; `inputs` is the training's
    fingerprint. Without a checkpoint (None) both calls do nothing."""

    def __init__(self, checkpoint: Checkpoint | None, stack: Any, optimizer: torch.optim.Optimizer, *,
                 heads: Sequence[str] = (), rng: random.Random | None = None,
                 generators: Sequence[torch.Generator | None] = (), inputs: str = "") -> None:
        self.checkpoint, self.stack, self.optimizer = checkpoint, stack, optimizer
        self.heads, self.rng, self.generators = tuple(heads), rng, tuple(generators)
        self.inputs = fingerprint(inputs, checkpoint.context if checkpoint else None)
        self.resumed_from = 0

    def _params(self) -> list[torch.Tensor]:
        return [p for group in self.optimizer.param_groups for p in group["params"]]

    def resume(self) -> dict[str, Any]:
        """Restore the saved training and return its trainer state ("step", "history" and what the trainer
        passed to `step_done`); {} when there is nothing (matching) to resume."""
        saved = self.checkpoint.saved() if self.checkpoint else None
        if not saved:
            return {}
        params = self._params()
        if saved.get("inputs") != self.inputs or len(saved["params"]) != len(params):
            log.warning("checkpoint %s was written for other inputs; starting over", self.checkpoint.path)
            return {}
        with torch.no_grad():
            for p, value in zip(params, saved["params"]):
                p.copy_(value.to(p.device))
        for name in self.heads:
            self.stack.heads[name].load_state_dict(saved["heads"][name])
        self.optimizer.load_state_dict(saved["optimizer"])
        _restore_rng(saved["rng"], self.rng, self.generators)
        self.resumed_from = self.checkpoint.resumed_from = int(saved["trainer"]["step"])
        log.info("resumed from %s at step %d", self.checkpoint.path, self.resumed_from)
        return dict(saved["trainer"])

    def step_done(self, step: int, *, force: bool = False, **trainer: Any) -> None:
        """After optimisation step number `step` (counted from 1): every `every` steps (or with `force`), write
        the checkpoint with the trainer's own state (`trainer`: its history, schedule, ...)."""
        if self.checkpoint is None or not (force or step % self.checkpoint.every == 0):
            return
        self.checkpoint.write({
            "inputs": self.inputs, "params": [p.detach().cpu().clone() for p in self._params()],
            "heads": {name: {k: v.detach().cpu().clone() for k, v in self.stack.heads[name].state_dict().items()}
                      for name in self.heads},
            "optimizer": self.optimizer.state_dict(), "rng": _rng_states(self.rng, self.generators),
            "trainer": {**trainer, "step": step},
        })
