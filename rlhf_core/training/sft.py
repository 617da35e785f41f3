"""Supervised fine-tuning (stage 1): the `policy` adapter learns the demonstrations, with the loss on the
answer tokens only (`algorithms.sft`), and the service that makes an SFT policy version of a workspace.

A batch packs each prompt once with all of its demonstrations in the batch behind it (`PackedResponses`:
every answer sees the prompt and itself, never another answer), so several people's answers to one prompt
cost the prompt once; the LM head projects only answer tokens. Demonstrations are split into train and
held-out by prompt; the held-out NLL per answer token is measured before training (epoch 0) and after each
epoch, and with `sft.early_stopping` the epoch with the lowest is kept. The version records its train and
held-out NLL, the answer tokens trained on and the steps; the per-step rows go to the training logs under
phase "sft" (the operator page plots them).
"""

from __future__ import annotations

import json
import math
import random
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from peft import set_peft_model_state_dict
from tqdm.auto import tqdm

from rlhf_core.algorithms.sft import perplexity
from rlhf_core.config import PolicyConfig, SFTConfig
from rlhf_core.models.batching import prompt_token_ids, response_token_ids
from rlhf_core.models.stack import ModelStack
from rlhf_core.training.checkpoint import Checkpoint, Tracked, fingerprint
from rlhf_core.training.publish import publish_version
from rlhf_core.training.reward_data import packed_response_batch, split_by_prompt
from rlhf_core.training.rollout import eval_mode, generate_rollout, rollout_logprobs, rollout_metrics
from rlhf_core.training.run_log import finite, record_training_steps
from rlhf_core.training.workspace_stack import activate_policy, adapter_dir
from rlhf_core.workspace import Workspace
from storage import (
    Database,
    DemonstrationRow,
    PolicyVersion,
    add_policy_version,
    current_policy,
    demonstration_counts,
    demonstration_rows,
    list_policies,
    next_policy_id,
)

GRAD_CLIP_NORM = 1.0
SAMPLE_PROMPTS = 16  # fresh samples after training, for the KL to the base
MAX_ANSWERS_PER_ROW = 6  # as the reward model's packing: a row's attention grows with the square of its length


class NoDemonstrationsError(ValueError):
    """SFT has nothing to learn from; the message says how to get demonstrations."""


@dataclass(frozen=True)
class SFTExample:
    """A demonstration to learn: under `prompt_messages`, answer `text`."""

    prompt_messages: list[dict[str, str]]
    text: str
    prompt_id: int


@dataclass(frozen=True)
class EncodedDemonstration:
    """Token ids of one demonstration, truncated to the length budget: the templated prompt and the answer
    (ending with the end-of-turn token, as the model emits it)."""

    prompt: list[int]
    answer: list[int]


@dataclass
class SFTResult:
    history: list[dict[str, Any]]  # one row per optimizer step; epoch-end rows also carry "heldout_nll"
    summary: dict[str, Any]


def sft_examples(rows: Sequence[DemonstrationRow]) -> list[SFTExample]:
    return [SFTExample(prompt_messages=r.prompt_messages, text=r.text, prompt_id=r.prompt_id) for r in rows]


def encode_demonstration(tokenizer, example: SFTExample, max_length: int) -> EncodedDemonstration:  # noqa: ANN001
    """Prompt + answer within `max_length` tokens: the answer keeps its start (and the end-of-turn token) and
    at most the budget the prompt leaves, the prompt at least half of it and its end (where the question is)."""
    prompt = prompt_token_ids(tokenizer, example.prompt_messages)
    answer = response_token_ids(tokenizer, example.text, max_length - min(len(prompt), max_length // 2))
    return EncodedDemonstration(prompt=prompt[-(max_length - len(answer)):], answer=answer)


def packed_rows(batch: Sequence[EncodedDemonstration]) -> list[tuple[list[int], list[list[int]]]]:
    """(prompt, answers) rows: the batch's answers to one prompt share its row, up to MAX_ANSWERS_PER_ROW."""
    rows: list[tuple[list[int], list[list[int]]]] = []
    open_row: dict[tuple[int, ...], int] = {}
    for demo in batch:
        key = tuple(demo.prompt)
        row = open_row.get(key)
        if row is None or len(rows[row][1]) >= MAX_ANSWERS_PER_ROW:
            row = open_row[key] = len(rows)
            rows.append((demo.prompt, []))
        rows[row][1].append(demo.answer)
    return rows


def answer_nll(stack: ModelStack, batch: Sequence[EncodedDemonstration]) -> tuple[torch.Tensor, int]:
    """(−Σ log p of every answer token of the batch [scalar, nats, with its graph], answer tokens), through
    the active adapter, in one forward pass of the packed rows."""
    packed = packed_response_batch(packed_rows(batch), stack.tokenizer.pad_token_id).to(stack.device)
    logp = stack.packed_response_logprobs(packed)  # [rows, slots], 0 for an empty slot
    return -logp.sum(), sum(len(demo.answer) for demo in batch)


def demonstration_batches(encoded: Sequence[EncodedDemonstration], batch_size: int, rng: random.Random
                          ) -> list[list[int]]:
    """Indices of `encoded` in batches of `batch_size`, one epoch: shuffled, sorted by length within windows of
    16 batches (little padding, as transformers' group_by_length), batch order shuffled."""
    order = list(range(len(encoded)))
    rng.shuffle(order)
    window = 16 * batch_size

    def length(i: int) -> int:
        return len(encoded[i].prompt) + len(encoded[i].answer)

    ordered = [i for start in range(0, len(order), window) for i in sorted(order[start:start + window], key=length)]
    batches = [ordered[start:start + batch_size] for start in range(0, len(ordered), batch_size)]
    rng.shuffle(batches)
    return batches


@torch.no_grad()
def heldout_nll(stack: ModelStack, encoded: Sequence[EncodedDemonstration], batch_size: int) -> float | None:
    """NLL per answer token of `encoded` under the `policy` adapter (nats/token; eval mode), None when empty."""
    if not encoded:
        return None
    total, tokens = 0.0, 0
    with eval_mode(stack.model), stack.use("policy"):
        for start in range(0, len(encoded), batch_size):
            nll, n = answer_nll(stack, encoded[start:start + batch_size])
            total, tokens = total + float(nll), tokens + n
    return total / tokens


def train_sft(stack: ModelStack, train: Sequence[SFTExample], heldout: Sequence[SFTExample], cfg: SFTConfig, *,
              on_step: Callable[[dict[str, Any]], None] | None = None, progress: bool = True,
              checkpoint: Checkpoint | None = None) -> SFTResult:
    """Up to `cfg.epochs` passes (and at most `cfg.max_steps` steps, when set) over `train` in batches of
    `cfg.batch_size` demonstrations, AdamW at `cfg.learning_rate` with gradient-norm clipping at 1.0, the loss
    `algorithms.sft.sft_loss` (mean NLL per answer token of the batch). Trains the stack's `policy` adapter in
    place from wherever it stands; with `cfg.early_stopping` and held-out demonstrations, the epoch (0 = as it
    started) with the lowest held-out NLL is kept. Adapters are frozen again on return. With `checkpoint`, the
    training resumes from it and writes it every `checkpoint.every` steps (`training.checkpoint`)."""
    if not train:
        raise NoDemonstrationsError("no demonstrations to train on (all are held out): import or write more")
    torch.manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    tok = stack.tokenizer
    enc_train = [encode_demonstration(tok, ex, cfg.max_length) for ex in train]
    enc_held = [encode_demonstration(tok, ex, cfg.max_length) for ex in heldout]
    started = time.perf_counter()
    before = heldout_nll(stack, enc_held, cfg.batch_size)
    early = cfg.early_stopping and before is not None
    best = (before, 0, stack._adapter_state("policy") if early else None)
    params = stack.trainable_parameters("policy")
    optimizer = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=0.0)
    schedule = [demonstration_batches(enc_train, cfg.batch_size, rng) for _ in range(cfg.epochs)]
    total = sum(len(b) for b in schedule) if cfg.max_steps <= 0 else min(cfg.max_steps, sum(len(b) for b in schedule))
    saved = Tracked(checkpoint, stack, optimizer, rng=rng, inputs=fingerprint(train, heldout, cfg))
    state = saved.resume()  # {} unless a checkpoint of this same training is there
    schedule, history = state.get("schedule", schedule), state.get("history", [])
    epoch_nll: list[float] = state.get("epoch_nll", [])
    best = state.get("best", best)
    bar = tqdm(total=total, initial=len(history), desc="sft", unit="step", disable=not progress)
    try:
        for epoch, batches in enumerate(schedule, start=1):
            if epoch <= len(epoch_nll):  # finished before the checkpoint this training resumed from
                continue
            nll_total, token_total = state.pop("epoch_sums", (0.0, 0))
            for index in batches[max(0, saved.resumed_from - sum(map(len, schedule[:epoch - 1]))):]:
                if len(history) >= total:
                    break
                t0 = time.perf_counter()
                stack.model.train()
                with stack.use("policy"):  # forward and backward under one adapter (activation checkpointing)
                    nll, tokens = answer_nll(stack, [enc_train[i] for i in index])
                    loss = nll / tokens
                    loss.backward()
                norm = float(torch.nn.utils.clip_grad_norm_(params, GRAD_CLIP_NORM))
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                nll_total, token_total = nll_total + float(nll.detach()), token_total + tokens
                seconds = time.perf_counter() - t0
                row = {"step": len(history), "epoch": epoch, "train_nll": float(loss.detach()), "tokens": tokens,
                       "demonstrations": len(index), "grad_norm": finite(norm), "seconds": seconds,
                       "tokens_per_s": tokens / seconds}
                history.append(row)
                bar.update(1)
                bar.set_postfix(nll=f"{row['train_nll']:.3f}")
                if on_step:
                    on_step(row)
                saved.step_done(len(history), schedule=schedule, history=history, epoch_nll=epoch_nll, best=best,
                                epoch_sums=(nll_total, token_total))
            if token_total == 0:
                break
            epoch_nll.append(nll_total / token_total)
            held = heldout_nll(stack, enc_held, cfg.batch_size)
            history[-1]["heldout_nll"] = held
            if early and held < best[0]:
                best = (held, epoch, stack._adapter_state("policy") if epoch < len(schedule) else None)
    finally:
        bar.close()
        stack.freeze_adapters()
        stack.model.eval()
    kept_epoch = best[1] if early else len(epoch_nll)
    if early and best[2] is not None and kept_epoch < len(epoch_nll):  # a later epoch was worse: go back
        set_peft_model_state_dict(stack.model, {k: v.to(stack.device) for k, v in best[2].items()},
                                  adapter_name="policy")
    held_kept = best[0] if early else heldout_nll(stack, enc_held, cfg.batch_size)
    summary = {
        "train_nll": epoch_nll[kept_epoch - 1] if kept_epoch else None, "heldout_nll": held_kept,
        "heldout_nll_before": before, "heldout_perplexity": None if held_kept is None else perplexity(held_kept),
        "best_epoch": kept_epoch, "epochs_run": len(epoch_nll), "steps": len(history),
        "tokens": sum(row["tokens"] for row in history), "demonstrations_train": len(train),
        "demonstrations_heldout": len(heldout), "learning_rate": cfg.learning_rate,
        "seconds": time.perf_counter() - started,
    }
    return SFTResult(history, summary)


def latest_sft_version(db: Database) -> PolicyVersion | None:
    """The newest policy version made by SFT (the KL anchor of `policy.reference = "sft"`), or None."""
    return next((v for v in reversed(list_policies(db)) if v.algorithm == "sft"), None)


def after_sft(stack: ModelStack, prompts: list[list[dict[str, str]]], cfg: PolicyConfig) -> dict[str, float | None]:
    """Fresh samples of the fine-tuned policy (one per prompt, `policy.max_new_tokens`, temperature 1) measured as a
    rollout is: KL per token to the base (the reference is set to the base here), entropy, response length."""
    stack.set_reference(None)
    rollout = generate_rollout(stack, prompts, samples_per_prompt=1, max_new_tokens=cfg.max_new_tokens,
                               temperature=1.0, generator=torch.Generator(device=stack.device).manual_seed(cfg.seed))
    metrics = rollout_metrics(rollout, rollout_logprobs(stack, rollout, cfg.minibatch_size), None)
    return {key: finite(metrics[key]) for key in ("kl_per_token", "kl_base_per_token", "kl_per_sequence", "entropy",
                                                  "response_length", "truncated_fraction")}


def sft_first_due(ws: Workspace, db: Database) -> bool:
    """Whether a round must fine-tune first: `loop.sft_first` and no SFT version yet. Raises
    NoDemonstrationsError when it must but there is nothing to fine-tune on."""
    if not ws.config.loop.sft_first or latest_sft_version(db) is not None:
        return False
    if demonstration_counts(db)["demonstrations"] == 0:
        raise NoDemonstrationsError(
            "loop.sft_first is on but there are no demonstrations: import some (rlhf demos import FILE), let "
            "annotators write them (labeling.demonstrations = \"optional\"), or set loop.sft_first = false")
    return True


def run_sft_training(ws: Workspace, db: Database, stack: ModelStack, *, job_id: int | None = None,
                     progress: bool = True, on_progress: Callable[[float, str], None] | None = None) -> PolicyVersion:
    """Fine-tune the current policy on every demonstration and record the next policy version (algorithm
    "sft"): the adapter is saved under `adapter_dir(ws, "policy", next_policy_id(db))` (with the critic of the
    current version passed on unchanged) before the version row and the step logs are written."""
    cfg = ws.config.sft
    examples = sft_examples(demonstration_rows(db))
    if not examples:
        raise NoDemonstrationsError(
            "no demonstrations yet: write some on the labeling page (labeling.demonstrations = \"optional\" in "
            "rlhf.toml) or import a file (rlhf demos import FILE)")
    train, heldout = split_by_prompt(examples, cfg.eval_fraction, cfg.seed)
    current = current_policy(db)
    activate_policy(stack, db, current.id)
    per_epoch = math.ceil(len(train) / cfg.batch_size)

    def report(row: dict[str, Any]) -> None:
        if on_progress:
            steps = cfg.max_steps or per_epoch * cfg.epochs
            on_progress(min(0.95, (row["step"] + 1) / steps),
                        f"sft step {row['step'] + 1}, epoch {row['epoch']}: NLL/token {row['train_nll']:.3f}")

    if on_progress:
        on_progress(0.0, f"fine-tuning on {len(train)} demonstrations ({len(heldout)} held out)")
    checkpoint = Checkpoint.for_job(ws, job_id, "sft")
    if checkpoint is not None:  # resumed only by a fine-tuning of the same version
        checkpoint.context["from_version"] = current.id
    result = train_sft(stack, train, heldout, cfg, on_step=report, progress=progress, checkpoint=checkpoint)
    if on_progress:
        on_progress(0.95, "measuring fresh samples of the fine-tuned policy")
    # Held-out prompts first: the KL to the base (and length, entropy) in the rounds table's terms.
    probe = [ex.prompt_messages for ex in [*heldout, *train]][:SAMPLE_PROMPTS]
    result.summary.update(after_sft(stack, list({json.dumps(p): p for p in probe}.values()), ws.config.policy))
    number = next_policy_id(db)
    out = adapter_dir(ws, "policy", number)
    critic = Path(current.adapter_path) / "value" if current.adapter_path else None

    def write(directory: Path) -> None:
        stack.save_adapter("policy", directory)
        if critic is not None and critic.is_dir():  # PPO's critic goes on with the next version
            shutil.copytree(critic, directory / "value", dirs_exist_ok=True)

    record_training_steps(ws, db, phase="sft", rows=result.history, job_id=job_id, run=f"policy-v{number:04d}-sft")
    metrics = {k: finite(v) if isinstance(v, float) else v for k, v in result.summary.items()}
    metrics.update(base_4bit=stack.quantized, job_id=job_id,
                   resumed_from_step=checkpoint.resumed_from if checkpoint is not None else 0)
    return publish_version(out, write, lambda: add_policy_version(
        db, parent_id=current.id, adapter_path=str(out), algorithm="sft", round=current.round + 1, metrics=metrics,
        version_id=number), f"policy v{number}")
