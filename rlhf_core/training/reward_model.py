"""Training the LoRA reward model on human judgments with the Bradley-Terry loss, and the service
that retrains it on all judgments each round and records a new `RewardModelVersion`."""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from tqdm import tqdm

from rlhf_core.algorithms.preference import bradley_terry_loss, bt_accuracy
from rlhf_core.config import RewardConfig
from rlhf_core.models.stack import ModelStack
from rlhf_core.training.reward_data import (
    EncodedPair,
    PreferenceExample,
    encode_pairs,
    pair_batch,
    preference_examples,
    split_by_prompt,
)
from rlhf_core.training.step_log import record_training_steps
from rlhf_core.training.workspace_stack import adapter_dir
from rlhf_core.workspace import Workspace
from storage import (
    Database,
    RewardModelVersion,
    add_reward_model_version,
    judgment_rows,
    list_reward_models,
)

__all__ = [
    "MIN_DECISIVE_JUDGMENTS", "PreferenceExample", "RewardTrainResult", "evaluate_reward_model",
    "preference_examples", "run_reward_training", "split_by_prompt", "train_reward_model",
]

MIN_DECISIVE_JUDGMENTS = 4
GRAD_CLIP_NORM = 1.0


@dataclass
class RewardTrainResult:
    """Outcome of one reward-model training run. Losses in nats; accuracies in [0, 1].

    heldout_accuracy / heldout_loss are None when there is no held-out example. train_loss is the
    mean step loss over the last epoch. history holds one dict per optimisation step.
    """

    heldout_accuracy: float | None
    heldout_loss: float | None
    train_loss: float
    steps: int
    n_train: int
    n_heldout: int
    history: list[dict[str, float]] = field(default_factory=list)


def _batches(pairs: Sequence[EncodedPair], batch_size: int) -> list[Sequence[EncodedPair]]:
    return [pairs[i:i + batch_size] for i in range(0, len(pairs), batch_size)]


def _pair_scores(stack: ModelStack, pairs: Sequence[EncodedPair], *, with_margin: bool
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Rewards of chosen and rejected ([B] each) from one forward pass over the 2B sequences."""
    batch, margin = pair_batch(pairs, stack.tokenizer.pad_token_id, with_margin=with_margin)
    batch = batch.to(stack.device)
    scores = stack.reward(batch.input_ids, batch.attention_mask)
    n = len(pairs)
    return scores[:n], scores[n:], None if margin is None else margin.to(stack.device)


def _evaluate_encoded(stack: ModelStack, pairs: Sequence[EncodedPair], batch_size: int
                      ) -> tuple[float | None, float | None]:
    if not pairs:
        return None, None
    was_training = stack.model.training
    stack.model.eval()
    chosen, rejected = [], []
    try:
        with torch.no_grad():
            for chunk in _batches(pairs, batch_size):
                r_c, r_r, _ = _pair_scores(stack, chunk, with_margin=False)
                chosen.append(r_c)
                rejected.append(r_r)
    finally:
        stack.model.train(was_training)
    r_c, r_r = torch.cat(chosen), torch.cat(rejected)
    return float(bt_accuracy(r_c, r_r)), float(bradley_terry_loss(r_c, r_r))


def evaluate_reward_model(stack: ModelStack, examples: Sequence[PreferenceExample], cfg: RewardConfig
                          ) -> tuple[float | None, float | None]:
    """(accuracy, BT loss) of the current `reward` adapter on `examples`; (None, None) if empty.

    Accuracy is the fraction with r_chosen > r_rejected; the loss has no strength margin, so it is
    the plain negative log-likelihood of the preferences and comparable across configurations.
    Runs in eval mode under no_grad.
    """
    return _evaluate_encoded(stack, encode_pairs(stack.tokenizer, examples, cfg.max_length), cfg.batch_size)


def train_reward_model(
    stack: ModelStack, train: Sequence[PreferenceExample], heldout: Sequence[PreferenceExample],
    cfg: RewardConfig, *, on_step: Callable[[dict[str, float]], None] | None = None, progress: bool = True,
) -> RewardTrainResult:
    """Fit the `reward` adapter (LoRA + scalar head; the base stays frozen) with the Bradley-Terry loss.

    Each step scores B chosen and B rejected sequences in one forward pass ([2B, T] right-padded,
    score read at the last real token by the attention mask, so pad == eos is safe), minimises
    −log σ(r_c − r_r − margin) (margin from annotator strength when cfg.use_strength_margin) with
    AdamW and gradient-norm clipping at 1.0, for cfg.epochs passes over `train` in a seeded shuffle.
    `on_step` receives {"step", "epoch", "loss", "accuracy", "reward_margin", "grad_norm", "lr"}
    (reward_margin = mean r_c − r_r of the batch). Afterwards the adapter and head are frozen and
    the model is left in eval mode; held-out metrics come from `evaluate_reward_model`.
    """
    if not train:
        raise ValueError("no training examples: the reward model needs at least one decisive judgment")
    if cfg.epochs < 1 or cfg.batch_size < 1:
        raise ValueError(f"reward.epochs and reward.batch_size must be at least 1, got {cfg.epochs} and "
                         f"{cfg.batch_size}")
    torch.manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    train_pairs = encode_pairs(stack.tokenizer, train, cfg.max_length)
    heldout_pairs = encode_pairs(stack.tokenizer, heldout, cfg.max_length)

    # Only the reward adapter trains: other adapters stay frozen so no gradient is computed for them.
    stack.freeze_adapters()
    params = stack.trainable_parameters("reward")
    optimizer = torch.optim.AdamW(params, lr=cfg.learning_rate)
    steps_per_epoch = math.ceil(len(train_pairs) / cfg.batch_size)
    total_steps = steps_per_epoch * cfg.epochs
    history: list[dict[str, float]] = []
    bar = tqdm(total=total_steps, desc="reward model", unit="step", disable=not progress)
    stack.model.train()
    try:
        for epoch in range(cfg.epochs):
            order = list(range(len(train_pairs)))
            rng.shuffle(order)
            for chunk in _batches([train_pairs[i] for i in order], cfg.batch_size):
                # Forward and backward under one adapter context (ModelStack's checkpointing would also
                # recompute through the reward adapter if backward ran outside it).
                with stack.use("reward"):
                    r_c, r_r, margin = _pair_scores(stack, chunk, with_margin=cfg.use_strength_margin)
                    loss = bradley_terry_loss(r_c, r_r, margin)
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                grad_norm = torch.nn.utils.clip_grad_norm_(params, GRAD_CLIP_NORM)
                optimizer.step()
                row = {
                    "step": len(history) + 1, "epoch": epoch + 1, "loss": float(loss.detach()),
                    "accuracy": float(bt_accuracy(r_c.detach(), r_r.detach())),
                    "reward_margin": float((r_c - r_r).detach().mean()), "grad_norm": float(grad_norm),
                    "lr": optimizer.param_groups[0]["lr"],
                }
                history.append(row)
                bar.update(1)
                bar.set_postfix(loss=f"{row['loss']:.3f}", acc=f"{row['accuracy']:.2f}")
                if on_step is not None:
                    on_step(dict(row))
    finally:
        bar.close()
        stack.model.eval()
        stack.freeze_adapters()
    accuracy, heldout_loss = _evaluate_encoded(stack, heldout_pairs, cfg.batch_size)
    last_epoch = history[-steps_per_epoch:]
    return RewardTrainResult(
        heldout_accuracy=accuracy, heldout_loss=heldout_loss,
        train_loss=sum(r["loss"] for r in last_epoch) / len(last_epoch), steps=len(history),
        n_train=len(train_pairs), n_heldout=len(heldout_pairs), history=history,
    )


def run_reward_training(
    ws: Workspace, db: Database, stack: ModelStack, *, job_id: int | None = None, progress: bool = True,
    on_progress: Callable[[float, str], None] | None = None,
) -> RewardModelVersion:
    """Retrain the reward model from scratch on all train-pair judgments and record a new version.

    Raises ValueError when fewer than MIN_DECISIVE_JUDGMENTS a/b judgments exist. The adapter is
    saved to `adapter_dir(ws, "reward", n)` before the version row is written, so a row always
    points at a complete adapter (a crash in between leaves an unreferenced directory that the
    next run overwrites). Per-step metrics go to the training logs under phase "reward".
    """
    def report(fraction: float, message: str) -> None:
        if on_progress is not None:
            on_progress(fraction, message)

    cfg = ws.config.reward
    started = time.perf_counter()
    report(0.0, "reading judgments")
    examples, stats = preference_examples(judgment_rows(db, kinds=("train",)))
    if len(examples) < MIN_DECISIVE_JUDGMENTS:
        raise ValueError(
            f"need at least {MIN_DECISIVE_JUDGMENTS} decisive (a/b) judgments to train a reward model, "
            f"have {len(examples)} ({stats['ties_excluded']} ties and {stats['both_bad_excluded']} both-bad "
            "excluded); collect more"
        )
    train, heldout = split_by_prompt(examples, cfg.eval_fraction, cfg.seed)
    stack.reset_adapter("reward")  # LoRA weights and head: each round retrains from scratch
    total_steps = math.ceil(len(train) / cfg.batch_size) * cfg.epochs

    def on_step(row: dict[str, float]) -> None:
        report(0.05 + 0.85 * row["step"] / total_steps, f"step {row['step']}/{total_steps}, loss {row['loss']:.3f}")

    report(0.05, f"training on {len(train)} judgments, {len(heldout)} held out")
    result = train_reward_model(stack, train, heldout, cfg, on_step=on_step, progress=progress)
    version_number = len(list_reward_models(db)) + 1
    report(0.92, f"saving reward model v{version_number}")
    directory = stack.save_adapter("reward", adapter_dir(ws, "reward", version_number))
    record_training_steps(ws, db, phase="reward", rows=result.history, job_id=job_id,
                          run=f"reward-v{version_number:04d}")
    metrics: dict[str, Any] = {
        **stats, "n_train": result.n_train, "n_heldout": result.n_heldout, "train_loss": result.train_loss,
        "steps": result.steps, "epochs": cfg.epochs, "learning_rate": cfg.learning_rate,
        "seconds": round(time.perf_counter() - started, 3),
    }
    version = add_reward_model_version(
        db, adapter_path=str(directory), trained_on=result.n_train, heldout_accuracy=result.heldout_accuracy,
        heldout_loss=result.heldout_loss, metrics=metrics,
    )
    acc = "n/a" if result.heldout_accuracy is None else f"{result.heldout_accuracy:.3f}"
    report(1.0, f"reward model v{version_number} trained: held-out accuracy {acc}")
    return version
