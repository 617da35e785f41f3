"""Rollouts for policy updates: sample responses with the policy adapter, score them, and record the
log-probs of the sampling policy and of the reference, as PPO and GRPO need them.

Truncation: a response that hit `max_new_tokens` has no eos and is kept as it is; nothing is
appended, so the policy is never credited with a token it did not sample. Its score (and the
score bonus in the per-token rewards) is read at its last real token, like any other response.

Log-probs are those of the policy at temperature 1 without top-p, the distribution PPO's ratios are
about; sampling at another temperature or with top_p < 1 makes a rollout slightly off-policy.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from rlhf_core.algorithms.correlation import pearson_correlation
from rlhf_core.algorithms.evidence import conservative_reward
from rlhf_core.algorithms.kl import kl_k1, kl_k3, sequence_kl
from rlhf_core.algorithms.masked import masked_mean
from rlhf_core.models.batching import SequenceBatch, build_sequences, prompt_token_ids
from rlhf_core.models.generation import SamplingParams
from rlhf_core.models.stack import ModelStack
from rlhf_core.training.distributed import DataParallel


@dataclass
class Rollout:
    """B = n_prompts · group_size sampled responses; the samples of one prompt are consecutive rows.

    `batch` is right-padded prompt+response (positions start at 0 for every row, as in training);
    its response_mask [B, T-1] marks the response tokens, aligned with `ModelStack.token_logprobs`.
    """

    messages: list[list[dict[str, str]]]  # one conversation per row
    prompt_ids: list[list[int]]
    response_ids: list[list[int]]
    texts: list[str]  # decoded without special tokens
    batch: SequenceBatch
    group_size: int
    truncated: Tensor  # [B] bool: hit max_new_tokens without an eos

    @property
    def size(self) -> int:
        return len(self.response_ids)

    @property
    def response_lengths(self) -> Tensor:
        """Response tokens per row (eos included): [B] float."""
        return self.batch.response_mask.sum(dim=1)


ScoreFn = Callable[[Rollout], Tensor]  # a rollout -> [B] scores, one per response


@dataclass
class RolloutLogprobs:
    """Per-token quantities of a rollout, all [B, T-1], computed once before the update (no grad)."""

    old_logp: Tensor  # the sampling (policy) adapter, nats
    ref_logp: Tensor  # the reference (`ModelStack.reference`), nats
    entropy: Tensor  # policy entropy over the vocabulary, nats
    base_logp: Tensor | None = None  # the base model (adapters off); None when the reference is the base
    kl_exact: Tensor | None = None  # KL(policy ‖ reference) over the whole vocabulary at each sampled prefix


@torch.no_grad()
def generate_rollout(stack: ModelStack, prompts: list[list[dict[str, str]]], *, samples_per_prompt: int,
                     max_new_tokens: int, temperature: float, top_p: float = 1.0, min_new_tokens: int = 0,
                     max_prompt_tokens: int | None = None, batch_size: int = 64,
                     generator: torch.Generator | None = None) -> Rollout:
    """Sample `samples_per_prompt` responses per conversation through the `policy` adapter (random
    draws from `generator` on the stack's device, or torch's global generator)."""
    tok = stack.tokenizer
    eos, pad = tok.eos_token_id, tok.pad_token_id
    prompt_ids = [prompt_token_ids(tok, m, max_prompt_tokens) for m in prompts for _ in range(samples_per_prompt)]
    params = SamplingParams(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                            min_new_tokens=min(min_new_tokens, max_new_tokens))
    # A GPU decodes the whole rollout in one batch (per-token launch overhead dominates a small model).
    batch = len(prompt_ids) if stack.device.type == "cuda" else batch_size
    responses = stack.sample(prompt_ids, params, adapter="policy", batch_size=batch, generator=generator)
    truncated = torch.tensor([not r or r[-1] != eos for r in responses])
    batch = build_sequences(prompt_ids, responses, pad).to(stack.device)
    return Rollout(
        messages=[m for m in prompts for _ in range(samples_per_prompt)], prompt_ids=prompt_ids,
        response_ids=responses, texts=[tok.decode(r, skip_special_tokens=True) for r in responses],
        batch=batch, group_size=samples_per_prompt, truncated=truncated,
    )


def gather_rollout(dp: DataParallel, rollout: Rollout, lp: RolloutLogprobs, scores: Tensor, values: Tensor | None,
                   pad_id: int) -> tuple[Rollout, RolloutLogprobs, Tensor, Tensor | None]:
    """Every process's share of a step's rollout, joined in rank order on every process: the responses,
    their scores, log-probs (and critic values, for PPO), so that all processes compute the same
    advantages and metrics. The per-token tensors keep their columns (positions start at 0 in every
    row) and are padded with zeros to the joined batch's width."""
    if not dp.enabled:
        return rollout, lp, scores, values
    widths = rollout.batch.attention_mask.sum(dim=1).tolist()

    def rows(x: Tensor | None) -> list[Tensor | None]:
        return [None if x is None else x[i, :max(0, w - 1)].cpu() for i, w in enumerate(widths)]

    local = list(zip(rollout.messages, rollout.prompt_ids, rollout.response_ids, rollout.texts,
                     rollout.truncated.tolist(), scores.detach().float().cpu().tolist(), rows(lp.old_logp),
                     rows(lp.ref_logp), rows(lp.entropy), rows(lp.base_logp), rows(values), rows(lp.kl_exact),
                     strict=True))
    joined = list(zip(*dp.gather(local), strict=True))
    messages, prompt_ids, response_ids, texts, truncated, joined_scores = joined[:6]
    device = rollout.batch.input_ids.device
    batch = build_sequences(list(prompt_ids), list(response_ids), pad_id).to(device)

    def padded(column: tuple[Tensor | None, ...]) -> Tensor | None:
        if column[0] is None:
            return None
        out = torch.zeros(len(column), batch.response_mask.shape[1], dtype=column[0].dtype)
        for i, row in enumerate(column):
            out[i, :len(row)] = row
        return out.to(device)

    old, ref, entropy, base, joined_values, kl_exact = (padded(c) for c in joined[6:])
    gathered = Rollout(messages=list(messages), prompt_ids=list(prompt_ids), response_ids=list(response_ids),
                       texts=list(texts), batch=batch, group_size=rollout.group_size,
                       truncated=torch.tensor(truncated, dtype=torch.bool))
    return (gathered, RolloutLogprobs(old, ref, entropy, base, kl_exact), torch.tensor(joined_scores, device=device),
            joined_values)


def reward_model_scores(stack: ModelStack, conservative: str = "mean", lam: float = 1.0) -> ScoreFn:
    """The default score: the `reward` adapter + head, its ensemble members combined by `conservative`
    (`reward.conservative`: their mean, UWO's mean − `lam`·std, or WCO's minimum; `conservative_reward`)."""

    @torch.no_grad()
    def score(rollout: Rollout) -> Tensor:
        b = rollout.batch
        members = stack.reward_members(b.input_ids, b.attention_mask, b.response_mask).float()
        return conservative_reward(members, conservative, lam)

    return score


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Eval mode for the enclosed passes (deterministic log-probs and values), then back to the previous mode."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def minibatches(n: int, size: int, epochs: int = 1, generator: torch.Generator | None = None) -> Iterator[Tensor]:
    """Row indices for `epochs` shuffled passes over n rows, drawn from `generator` (or torch's global
    generator), so seeded runs repeat. Data-parallel processes pass generators seeded alike: they must
    agree on every minibatch, whatever else each one draws (dropout, sampling)."""
    for _ in range(epochs):
        order = torch.randperm(n, generator=generator)
        yield from order.split(max(1, size))


def minibatch_rows(batch: SequenceBatch, index: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(input_ids [b, W], attention_mask [b, W], response_mask [b, W-1]) of some rows, trailing padding cut."""
    index = index.to(batch.input_ids.device)
    width = max(2, int(batch.attention_mask[index].sum(dim=1).max()))
    return (batch.input_ids[index, :width], batch.attention_mask[index, :width],
            batch.response_mask[index, :width - 1])


def cut(x: Tensor, index: Tensor, width: int) -> Tensor:
    """Rows `index` of a [B, T-1] tensor, trimmed to `width` columns like `minibatch_rows`."""
    return x[index.to(x.device), :width]


@contextmanager
def base_model(stack: ModelStack) -> Iterator[None]:
    """The bare base model (every adapter off), whatever the KL reference is."""
    with stack.model.disable_adapter():
        yield


@torch.no_grad()
def rollout_logprobs(stack: ModelStack, rollout: Rollout, chunk_size: int = 8) -> RolloutLogprobs:
    """Old-policy and reference log-probs plus policy entropy, in chunks of `chunk_size` rows; when the
    reference is an earlier policy, also the base model's log-probs (one more pass), so the total drift
    from the base stays visible.

    Computed in eval mode, so the log-probs the update's ratios start from are deterministic.
    """
    b = rollout.batch
    old, ref, ent, base, exact = [], [], [], [], []
    separate_base = stack.reference_path is not None
    with eval_mode(stack.model):
        for index in torch.arange(rollout.size).split(max(1, chunk_size)):
            ids, mask, response = b.input_ids[index], b.attention_mask[index], b.response_mask[index]
            with stack.use("policy"):
                logp, entropy, hidden = stack.token_logprobs_and_states(ids, mask, with_entropy=True,
                                                                        response_mask=response)
            with stack.reference():
                ref_logp, _, ref_hidden = stack.token_logprobs_and_states(ids, mask, response_mask=response)
            kl = torch.zeros_like(logp)
            at = response.bool()  # the response tokens only: the head's matmuls are the pass's largest
            kl[at] = stack.token_kl(hidden[at], ref_hidden[at])
            exact.append(kl)
            if separate_base:
                with base_model(stack):
                    base.append(stack.token_logprobs(ids, mask, response_mask=response)[0])
            old.append(logp)
            ref.append(ref_logp)
            ent.append(entropy)
    return RolloutLogprobs(torch.cat(old), torch.cat(ref), torch.cat(ent), torch.cat(base) if base else None,
                           torch.cat(exact))


def stop_kl(metrics: dict[str, float | None]) -> float:
    """The KL to the reference that `policy.max_kl_per_token` (the KL budget's share) is checked against: the
    exact per-token KL over the vocabulary at the sampled prefixes where it was computed, else k3 (never
    negative). k3 draws one token per position and has a heavy tail once the policy pushes down a token the
    reference likes: measured on a GRPO round, the step that ended it read 0.085 by k3 and 0.063 exactly."""
    exact = metrics.get("kl_exact_per_token")
    return float(metrics["kl_k3_per_token"] if exact is None else exact)


def rollout_metrics(rollout: Rollout, lp: RolloutLogprobs, scores: Tensor | None) -> dict[str, float | None]:
    """What a practitioner reads about the samples: score spread, KL to the reference (k1 estimator:
    unbiased, the same quantity the PPO reward is shaped with) and to the base, entropy, response
    length, and the correlation of score with length (near 1: the reward is mostly length, a hack
    coming). Without scores (no reward model) the score figures are left out."""
    mask = rollout.batch.response_mask
    base = lp.ref_logp if lp.base_logp is None else lp.base_logp
    lengths = rollout.response_lengths.float()
    metrics: dict[str, float | None] = {
        "kl_per_token": float(masked_mean(kl_k1(lp.old_logp, lp.ref_logp), mask)),
        "kl_k3_per_token": float(masked_mean(kl_k3(lp.old_logp, lp.ref_logp), mask)),
        "kl_per_sequence": float(sequence_kl(lp.old_logp, lp.ref_logp, mask).mean()),
        "kl_base_per_token": float(masked_mean(kl_k1(lp.old_logp, base), mask)),
        "kl_base_k3_per_token": float(masked_mean(kl_k3(lp.old_logp, base), mask)),
        "entropy": float(masked_mean(lp.entropy, mask)),
        "response_length": float(lengths.mean()),
        "truncated_fraction": float(rollout.truncated.float().mean()),
    }
    if lp.kl_exact is not None:  # no token draw in it: the estimate the KL budget's stop reads (`stop_kl`)
        metrics["kl_exact_per_token"] = float(masked_mean(lp.kl_exact, mask))
    if scores is not None:
        scores = scores.detach().float().cpu()
        metrics.update({
            "reward_mean": float(scores.mean()),
            "reward_std": float(scores.std(unbiased=False)),
            "reward_length_corr": pearson_correlation(scores.tolist(), lengths.cpu().tolist()),
        })
    return metrics
