"""Training and reading the process reward model (PRM): the `prm` adapter and step head learn P(step is right) from
step labels, read at each step's end (`models.process_reward`).

A labeled response becomes the prompt's tokens, then each step's tokens followed by a newline, the step's score
read at that newline, as TRL's PRMTrainer lays steps out; unlabeled steps (after a marked first error) are context,
not targets, and steps past `prm.max_length` are dropped. The loss is binary cross-entropy over the labeled steps
of a batch (a neutral step counts as `prm.neutral`). Labels are split into train and held-out by prompt; the step
accuracy and loss on the held-out steps are measured after each epoch, and the epoch with the lowest held-out loss is
kept. Scoring a new response cuts it with the same splitter the labeling page used (`data.steps.split_steps`) and
lays it out the same way, so training and scoring read the same positions.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from peft import set_peft_model_state_dict
from tqdm.auto import tqdm

from rlhf_core.config import PRMConfig
from rlhf_core.models.batching import prompt_token_ids
from rlhf_core.models.process_reward import PRM
from rlhf_core.models.stack import ModelStack
from rlhf_core.training.reward_data import split_by_prompt
from rlhf_core.training.rollout import eval_mode
from storage import StepLabelRow

STEP_END = "\n"  # appended to each step; the step's score is read at its last token
GRAD_CLIP_NORM = 1.0


@dataclass(frozen=True)
class StepExample:
    """A response's steps under its prompt, each labeled 1.0 (right), 0.0 (wrong) or None (not labeled)."""

    prompt_messages: list[dict[str, str]]
    steps: list[str]
    labels: list[float | None]
    prompt_id: int


@dataclass(frozen=True)
class EncodedSteps:
    """Prompt + steps as token ids, the index of each kept step's last token, and its label (None: context only)."""

    ids: list[int]
    ends: list[int]
    labels: list[float | None]


@dataclass
class PRMTrainResult:
    heldout_accuracy: float | None  # share of held-out labeled steps the PRM calls right (P >= 0.5 <=> right)
    heldout_loss: float | None  # binary cross-entropy, nats per held-out step
    heldout_majority: float | None  # the accuracy of always answering the held-out steps' commoner label
    train_steps: int  # labeled steps trained on
    heldout_steps: int
    best_epoch: int
    history: list[dict[str, float]] = field(default_factory=list)


def step_examples(rows: Sequence[StepLabelRow], neutral: str = "good") -> list[StepExample]:
    """Stored step labels as training examples: good 1.0, bad 0.0, neutral as `neutral` says, unlabeled None."""
    value = {"good": 1.0, "bad": 0.0, "neutral": 1.0 if neutral == "good" else 0.0, None: None}
    return [StepExample(r.prompt_messages, list(r.steps), [value[label] for label in r.labels], r.prompt_id)
            for r in rows if any(label is not None for label in r.labels)]


def encode_steps(tokenizer, messages: list[dict[str, str]], steps: Sequence[str],  # noqa: ANN001
                 labels: Sequence[float | None] | None, max_length: int) -> EncodedSteps:
    """Lay out one response for the PRM: the templated prompt (its end, at most half of `max_length`), then each
    step's tokens with STEP_END, as many whole steps as fit."""
    ids = prompt_token_ids(tokenizer, messages, max_prompt_tokens=max_length // 2)
    ends: list[int] = []
    kept: list[float | None] = []
    for i, step in enumerate(steps):
        piece = tokenizer(step + STEP_END, add_special_tokens=False)["input_ids"]
        if len(ids) + len(piece) > max_length:
            break
        ids = ids + piece
        ends.append(len(ids) - 1)
        kept.append(None if labels is None else labels[i])
    return EncodedSteps(ids, ends, kept)


def _batch(stack: ModelStack, rows: Sequence[EncodedSteps]) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r.ids) for r in rows)
    ids = torch.full((len(rows), width), stack.tokenizer.pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, :len(r.ids)] = torch.tensor(r.ids)
        mask[i, :len(r.ids)] = 1
    return ids.to(stack.device), mask.to(stack.device)


def step_logits(stack: ModelStack, rows: Sequence[EncodedSteps]) -> list[torch.Tensor]:
    """The PRM's logit at each kept step's end, one tensor [steps] per row (a row without steps: empty)."""
    ids, mask = _batch(stack, rows)
    logits = stack.step_logits(ids, mask)
    return [logits[i, torch.tensor(r.ends, dtype=torch.long, device=logits.device)] for i, r in enumerate(rows)]


def _targets(rows: Sequence[EncodedSteps], logits: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """The logits and labels of the labeled steps of a batch, flattened: ([N], [N])."""
    picked, wanted = [], []
    for r, row_logits in zip(rows, logits):
        for j, label in enumerate(r.labels):
            if label is not None:
                picked.append(row_logits[j])
                wanted.append(label)
    if not picked:
        empty = torch.zeros(0, device=logits[0].device if logits else "cpu")
        return empty, empty
    return torch.stack(picked), torch.tensor(wanted, device=picked[0].device)


@torch.no_grad()
def evaluate_steps(stack: ModelStack, rows: Sequence[EncodedSteps], batch_size: int) -> tuple[float, float, int]:
    """(step accuracy, BCE loss per step, labeled steps) of the PRM on `rows`; (nan, nan, 0) without labels."""
    right, loss, n = 0.0, 0.0, 0
    with eval_mode(stack.model):
        for start in range(0, len(rows), batch_size):
            chunk = rows[start:start + batch_size]
            logits, labels = _targets(chunk, step_logits(stack, chunk))
            if len(labels):
                right += float(((logits >= 0).float() == labels).sum())
                loss += float(torch.nn.functional.binary_cross_entropy_with_logits(logits, labels, reduction="sum"))
                n += len(labels)
    return (right / n, loss / n, n) if n else (math.nan, math.nan, 0)


def _snapshot(stack: ModelStack) -> dict[str, torch.Tensor]:
    state = {f"lora.{k}": v for k, v in stack._adapter_state(PRM).items()}
    state.update({f"head.{k}": v.detach().clone() for k, v in stack.heads[PRM].state_dict().items()})
    return state


def _restore(stack: ModelStack, state: dict[str, torch.Tensor]) -> None:
    lora = {k[len("lora."):]: v.to(stack.device) for k, v in state.items() if k.startswith("lora.")}
    set_peft_model_state_dict(stack.model, lora, adapter_name=PRM)
    stack.heads[PRM].load_state_dict({k[len("head."):]: v for k, v in state.items() if k.startswith("head.")})


def train_prm(stack: ModelStack, examples: Sequence[StepExample], cfg: PRMConfig, *,
              on_step: Callable[[dict[str, float]], None] | None = None, progress: bool = True) -> PRMTrainResult:
    """Fit the `prm` adapter and step head (freshly initialised; the base stays frozen) on `examples`: `cfg.epochs`
    passes in seeded batches of `cfg.batch_size` responses, AdamW with gradient-norm clipping, the epoch with the
    lowest held-out loss kept (`cfg.eval_fraction` of prompts held out). `on_step` receives {"step", "epoch",
    "loss", "accuracy", "steps_total"}. The adapter is frozen and in eval mode after."""
    from rlhf_core.models.stack import LoraSettings

    if not examples:
        raise ValueError("no step labels to train on")
    stack.enable_prm(LoraSettings(cfg.lora_r, cfg.lora_alpha), seed=cfg.seed)
    stack.reset_adapter(PRM)
    torch.manual_seed(cfg.seed)
    train, heldout = split_by_prompt(examples, cfg.eval_fraction, cfg.seed)
    encode = lambda ex: encode_steps(stack.tokenizer, ex.prompt_messages, ex.steps, ex.labels, cfg.max_length)  # noqa: E731
    train_rows = [row for row in map(encode, train) if any(x is not None for x in row.labels)]
    held_rows = [row for row in map(encode, heldout) if any(x is not None for x in row.labels)]
    if not train_rows:
        raise ValueError(f"no labeled step fits in prm.max_length = {cfg.max_length} tokens; raise it")
    held_labels = [x for r in held_rows for x in r.labels if x is not None]
    majority = max(sum(held_labels), len(held_labels) - sum(held_labels)) / len(held_labels) if held_labels else None
    stack.freeze_adapters()
    params = stack.trainable_parameters(PRM)
    optimizer = torch.optim.AdamW(params, lr=cfg.learning_rate)
    rng = random.Random(cfg.seed)
    per_epoch = math.ceil(len(train_rows) / cfg.batch_size)
    history: list[dict[str, float]] = []
    best = (math.inf, 0, None, (math.nan, math.nan))  # (held-out loss, epoch, state, (accuracy, loss))
    if held_rows:
        accuracy, loss, _ = evaluate_steps(stack, held_rows, cfg.batch_size)
        best = (loss, 0, _snapshot(stack), (accuracy, loss))
    bar = tqdm(total=per_epoch * cfg.epochs, desc="process reward model", unit="step", disable=not progress)
    try:
        for epoch in range(1, cfg.epochs + 1):
            order = list(range(len(train_rows)))
            rng.shuffle(order)
            stack.model.train()
            for start in range(0, len(order), cfg.batch_size):
                chunk = [train_rows[i] for i in order[start:start + cfg.batch_size]]
                optimizer.zero_grad(set_to_none=True)
                with stack.use(PRM):
                    logits, labels = _targets(chunk, step_logits(stack, chunk))
                    loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, labels)
                    loss.backward()
                torch.nn.utils.clip_grad_norm_(params, GRAD_CLIP_NORM)
                optimizer.step()
                row = {"step": len(history) + 1, "epoch": epoch, "loss": float(loss.detach()),
                       "accuracy": float(((logits.detach() >= 0).float() == labels).float().mean())}
                history.append(row)
                bar.update(1)
                if on_step is not None:
                    on_step({**row, "steps_total": per_epoch * cfg.epochs})
            if held_rows:
                accuracy, loss_value, _ = evaluate_steps(stack, held_rows, cfg.batch_size)
                history[-1].update(heldout_accuracy=accuracy, heldout_loss=loss_value)
                if loss_value < best[0]:
                    best = (loss_value, epoch, _snapshot(stack) if epoch < cfg.epochs else None,
                            (accuracy, loss_value))
    finally:
        bar.close()
        stack.model.eval()
        stack.freeze_adapters()
    if held_rows and best[2] is not None:
        _restore(stack, best[2])
    figures = best[3] if held_rows else (None, None)
    return PRMTrainResult(heldout_accuracy=figures[0], heldout_loss=figures[1], heldout_majority=majority,
                          train_steps=sum(x is not None for r in train_rows for x in r.labels),
                          heldout_steps=len(held_labels), best_epoch=best[1] if held_rows else cfg.epochs,
                          history=history)


def aggregate_steps(probabilities: Sequence[float], how: str = "min") -> float | None:
    """A response's PRM score from its steps' P(right): the minimum (its weakest step) or the product (all steps
    right, if independent); None for a response without steps."""
    if not probabilities:
        return None
    if how == "min":
        return float(min(probabilities))
    if how == "product":
        return float(math.prod(probabilities))
    raise ValueError(f"aggregate must be min or product, not {how!r}")


@torch.no_grad()
def step_probabilities(stack: ModelStack, conversations: Sequence[list[dict[str, str]]],
                       step_lists: Sequence[Sequence[str]], *, max_length: int, batch_size: int = 8
                       ) -> list[list[float]]:
    """P(step is right) of each step the PRM reads (those within `max_length`), per response."""
    rows = [encode_steps(stack.tokenizer, c, s, None, max_length) for c, s in zip(conversations, step_lists)]
    out: list[list[float]] = []
    with eval_mode(stack.model):
        for start in range(0, len(rows), batch_size):
            chunk = rows[start:start + batch_size]
            out += [torch.sigmoid(x).float().cpu().tolist() for x in step_logits(stack, chunk)]
    return out
