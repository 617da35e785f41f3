"""Online iterative DPO (RLHFlow's "RLHF Workflow", 2405.07863; OpenRLHF's iterative DPO): each round,
the `policy` adapter is trained with the DPO loss on fresh on-policy pairs, i.e. the judged pairs
sampled from the current version (`policy.dpo_past_rounds` adds earlier rounds'), plus, with
`policy.dpo_rm_pairs = N`, the best and worst of `policy.group_size` new samples for N prompts as
ranked by the current reward model. Ties and both-bad judgments are left out, as for the reward model.

The reference is `policy.reference` (the stack's reference: the base, the previous version or a
numbered one), so with "previous" the reference moves every round. Per step the log holds the loss,
the implicit rewards (β·log π/π_ref) of chosen and rejected responses, their margin and accuracy, the
sequence log-probs, and the exact KL to the reference (and to the base) on held-out responses. After
training, fresh samples of the new policy give the round's summary in the same terms as PPO/GRPO
(reward, KL per token, length, reward-length correlation). The loss itself is
`rlhf_core.algorithms.dpo`.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from rlhf_core.algorithms.dpo import dpo_loss
from rlhf_core.algorithms.kl import kl_from_logits
from rlhf_core.config import PolicyConfig
from rlhf_core.data.annotator_quality import low_accuracy_annotators, without_annotators
from rlhf_core.models.stack import ModelStack
from rlhf_core.training.checkpoint import Checkpoint, Tracked, fingerprint
from rlhf_core.training.distributed import DataParallel
from rlhf_core.training.ppo import clipped_step, make_optimizer
from rlhf_core.training.reward_data import (
    EncodedPair,
    PreferenceExample,
    encode_pairs,
    per_pair_values,
    preference_examples,
)
from rlhf_core.training.rollout import (
    Rollout,
    ScoreFn,
    base_model,
    eval_mode,
    generate_rollout,
    rollout_logprobs,
    rollout_metrics,
)
from rlhf_core.training.run_log import PolicyTrainResult, finite, show, summarize
from storage import Database, PolicyVersion, get_policy, judgment_rows

if TYPE_CHECKING:
    from rlhf_core.training.policy import PolicyUpdate

# Per-step DPO metrics the round summary reports as their mean over the last quarter of the steps.
DPO_SUMMARY_KEYS = ("dpo_loss", "reward_accuracy", "reward_margin", "chosen_reward", "rejected_reward", "logp_chosen",
                    "logp_rejected", "heldout_kl_per_token", "heldout_kl_base_per_token")
KL_CHUNK_ROWS = 4  # held-out rows per KL pass: full-vocabulary logits of a few rows at a time
HELDOUT_KL_KEYS = ("heldout_kl_per_token", "heldout_kl_base_per_token")


@dataclass
class DPOExamples:
    """The judged pairs a DPO round trains on, with what was left out (`preference_examples`' stats)."""

    examples: list[PreferenceExample]
    stats: dict[str, int]


def dpo_examples(db: Database, current: PolicyVersion, cfg: PolicyConfig, *, min_annotator_accuracy: float = 0.0
                 ) -> DPOExamples:
    """Decisive judgments of training pairs sampled from `current` and from up to `cfg.dpo_past_rounds` of its
    ancestors, without annotators whose control-pair accuracy is below
    `min_annotator_accuracy` (as for the reward model). Raises ValueError, saying what to do, when there
    are none and no reward-model pairs are configured either."""
    # The current version and its ancestors (not a rolled-back sibling that shares their round numbers).
    lineage, version = {current.id}, current
    for _ in range(cfg.dpo_past_rounds):
        if version.parent_id is None:
            break
        version = get_policy(db, version.parent_id)
        lineage.add(version.id)
    rows = [r for r in judgment_rows(db) if r.version_a in lineage and r.version_b in lineage]
    left_out = low_accuracy_annotators(db, min_annotator_accuracy)
    examples, stats = preference_examples(without_annotators(rows, left_out))
    stats["annotators_left_out"] = len(left_out)
    if not examples and cfg.dpo_rm_pairs == 0:
        raise ValueError(
            f"DPO has no pairs: no decisive (a/b) judgments of pairs sampled from policy v{current.id} "
            f"(round {current.round}; {stats['ties_excluded']} ties and {stats['both_bad_excluded']} both-bad "
            "left out). Judge this round's pairs first, or set policy.dpo_past_rounds or policy.dpo_rm_pairs")
    return DPOExamples(examples, stats)


def train_round(update: PolicyUpdate) -> PolicyTrainResult:
    """DPO's trainer (`rlhf_core.registry.POLICY_ALGORITHMS["dpo"]`): one round on the judged pairs sampled
    from the current version (`dpo_examples`) plus reward-ranked pairs, as `train_dpo` describes."""
    config = update.ws.config
    examples = dpo_examples(update.db, update.current, update.cfg,
                            min_annotator_accuracy=config.reward.min_annotator_accuracy)
    return train_dpo(update.stack, examples, update.prompts, update.score_fn, update.cfg,
                     max_length=config.reward.max_length, on_step=update.on_step, on_progress=update.on_progress,
                     progress=update.progress, dp=update.dp, checkpoint=update.checkpoint)


def reward_ranked_pairs(stack: ModelStack, prompts: list[list[dict[str, str]]], score_fn: ScoreFn,
                        cfg: PolicyConfig, generator: torch.Generator | None = None) -> tuple[list[EncodedPair], int]:
    """Best-of-n vs worst-of-n pairs: `cfg.group_size` fresh policy samples per prompt, ranked by
    `score_fn`. Uses the sampled token ids as they are (exactly what the policy produced). Returns
    (pairs, groups skipped because their best and worst scored the same or read the same)."""
    if not prompts:
        return [], 0
    rollout = generate_rollout(stack, prompts, samples_per_prompt=cfg.group_size, max_new_tokens=cfg.max_new_tokens,
                               temperature=cfg.temperature, min_new_tokens=cfg.min_new_tokens, generator=generator)
    scores = score_fn(rollout).detach().float().cpu().reshape(-1, cfg.group_size)
    pairs, skipped = [], 0
    for group, row in enumerate(scores):
        best = group * cfg.group_size + int(row.argmax())
        worst = group * cfg.group_size + int(row.argmin())
        if row.max() == row.min() or rollout.texts[best].strip() == rollout.texts[worst].strip():
            skipped += 1
            continue
        pairs.append(EncodedPair(prompt=rollout.prompt_ids[best], chosen=rollout.response_ids[best],
                                 rejected=rollout.response_ids[worst], strength=None))
    return pairs, skipped


def pair_logprobs(stack: ModelStack, pairs: Sequence[EncodedPair]) -> tuple[Tensor, Tensor]:
    """Whole-response log-probs of the pairs' chosen and rejected responses through the active adapter
    ([B], [B] nats), in one forward pass: each pair's prompt computed once, its two responses packed
    behind it (`PackedResponses`; a response shared by several pairs is computed once)."""
    return per_pair_values(pairs, stack.tokenizer.pad_token_id, stack.device, stack.packed_response_logprobs)


@torch.no_grad()
def reference_logprobs(stack: ModelStack, pairs: Sequence[EncodedPair], batch_size: int,
                       dp: DataParallel | None = None) -> tuple[Tensor, Tensor]:
    """Sequence log-probs of chosen and rejected responses under the reference: ([N], [N]) nats, eval
    mode. With `dp`, each process measures its share of the pairs and all get the whole."""
    dp = dp or DataParallel(single=True)
    mine = dp.shard(range(len(pairs)))
    found: list[tuple[int, float, float]] = []
    with eval_mode(stack.model), stack.reference():
        for start in range(0, len(mine), batch_size):
            rows = mine[start:start + batch_size]
            chosen, rejected = pair_logprobs(stack, [pairs[i] for i in rows])
            found += zip(rows, chosen.tolist(), rejected.tolist(), strict=True)
    chosen, rejected = torch.zeros(len(pairs)), torch.zeros(len(pairs))
    for i, c, r in dp.gather(found):
        chosen[i], rejected[i] = c, r
    return chosen.to(stack.device), rejected.to(stack.device)


def _response_logits(stack: ModelStack, ids: Tensor, mask: Tensor, response_mask: Tensor) -> Tensor:
    """Next-token logits at every response position of the active adapter: [N_tokens, V], float32."""
    hidden = stack.hidden_states(ids, mask)[:, :-1][response_mask.bool()]
    head = stack.model.get_base_model().lm_head
    return head(hidden.to(head.weight.dtype)).float()


@torch.no_grad()
def heldout_kl(stack: ModelStack, probe: Rollout, dp: DataParallel | None = None) -> dict[str, float]:
    """Exact KL(π‖π_ref) per token over the vocabulary at the response positions of held-out sequences
    (and KL to the base, the same number when the reference is the base). Nats/token; eval mode.
    With `dp`, each process measures its share of the sequences and the sums are shared."""
    dp = dp or DataParallel(single=True)
    b = probe.batch
    totals = {"ref": 0.0, "base": 0.0}
    tokens = 0
    with eval_mode(stack.model):
        for index in torch.tensor(dp.shard(range(probe.size)), dtype=torch.long).split(KL_CHUNK_ROWS):
            ids, mask, response = b.input_ids[index], b.attention_mask[index], b.response_mask[index]
            with stack.use("policy"):
                logits = _response_logits(stack, ids, mask, response)
            with stack.reference():
                kl_ref = kl_from_logits(logits, _response_logits(stack, ids, mask, response))
            totals["ref"] += float(kl_ref.sum())
            if stack.reference_path is not None:
                with base_model(stack):
                    totals["base"] += float(kl_from_logits(logits, _response_logits(stack, ids, mask, response)).sum())
            tokens += logits.shape[0]
    totals = dp.sums({**totals, "tokens": tokens})
    ref = totals["ref"] / max(1, totals["tokens"])
    base = ref if stack.reference_path is None else totals["base"] / max(1, totals["tokens"])
    return dict(zip(HELDOUT_KL_KEYS, (ref, base), strict=True))


def _split_prompts(prompts: list[list[dict[str, str]]], cfg: PolicyConfig, rng: random.Random
                   ) -> tuple[list[list[dict[str, str]]], list[list[dict[str, str]]]]:
    """(held-out probe prompts, prompts for reward-model pairs), disjoint while there are enough prompts."""
    order = rng.sample(prompts, len(prompts))
    probe = order[:cfg.prompts_per_step]
    rest = order[cfg.prompts_per_step:] or order
    return probe, rest[:cfg.dpo_rm_pairs]


def train_dpo(stack: ModelStack, examples: DPOExamples, prompts: list[list[dict[str, str]]], score_fn: ScoreFn | None,
              cfg: PolicyConfig, *, max_length: int = 512, on_step: Callable[[dict[str, Any]], None] | None = None,
              on_progress: Callable[[float, str], None] | None = None, progress: bool = True,
              max_grad_norm: float = 1.0, dp: DataParallel | None = None, checkpoint: Checkpoint | None = None
              ) -> PolicyTrainResult:
    """`cfg.dpo_epochs` passes of DPO over the judged pairs (encoded like the reward model's, at most
    `max_length` tokens) plus `cfg.dpo_rm_pairs` reward-ranked pairs, `cfg.dpo_batch_size` pairs per
    AdamW step at `cfg.dpo_learning_rate`, against the stack's reference. The held-out KL is measured
    every `cfg.dpo_kl_every` steps and on the last; training stops early once it exceeds
    `cfg.max_kl_per_token` (when > 0).

    prompts: train conversations (held-out probes and reward-model pairs are drawn from them);
    score_fn: the reward model (needed for `dpo_rm_pairs`; without it the summary has no reward figures).
    Trains the `policy` adapter in place; adapters are frozen again on return. With `dp` (several
    processes), each process samples its share of the reward-ranked groups and measures its share of
    the reference and held-out passes; each step's pairs are split among the processes and the
    gradients summed, so all make the update one process would. With `checkpoint` (one process), the training
    resumes from it and writes it every `checkpoint.every` steps (the epochs' pair orders with it).
    """
    dp = dp or DataParallel(single=True)
    if cfg.dpo_rm_pairs and score_fn is None:
        raise ValueError("policy.dpo_rm_pairs needs a reward model to rank samples: train one first (rlhf train-rm)")
    torch.manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    started = time.perf_counter()
    probe_prompts, rm_prompts = _split_prompts(prompts, cfg, rng)
    pairs = encode_pairs(stack.tokenizer, examples.examples, max_length)
    rm_pairs, rm_skipped = reward_ranked_pairs(stack, dp.shard(rm_prompts), score_fn, cfg,
                                               dp.sampling_generator(stack.device, cfg.seed))
    rm_pairs, rm_skipped = dp.gather(rm_pairs), int(dp.sum(rm_skipped))
    # The ranking's reward components (the reward model's and each function's mean), when they were combined.
    ranked_by = dict(getattr(score_fn, "last_metrics", {})) if rm_prompts else {}
    pairs += rm_pairs
    if not pairs:
        raise ValueError("DPO has no pairs: the reward model ranked every group's samples the same; "
                         "judge this round's pairs or raise policy.group_size")
    # The same held-out probe in every process: drawn from its own generator, seeded alike.
    probe = generate_rollout(stack, probe_prompts, samples_per_prompt=1, max_new_tokens=cfg.max_new_tokens,
                             temperature=cfg.temperature, min_new_tokens=cfg.min_new_tokens,
                             generator=torch.Generator(device=stack.device).manual_seed(cfg.seed))
    ref_chosen, ref_rejected = reference_logprobs(stack, pairs, cfg.dpo_batch_size, dp)
    order = torch.Generator().manual_seed(cfg.seed)  # every process draws the same batches
    optimizer = make_optimizer(stack, ("policy",), replace(cfg, learning_rate=cfg.dpo_learning_rate))
    per_epoch = math.ceil(len(pairs) / cfg.dpo_batch_size)
    total = cfg.dpo_epochs * per_epoch
    orders = [torch.randperm(len(pairs), generator=order) for _ in range(cfg.dpo_epochs)]  # the data order
    saved = Tracked(None if dp.enabled else checkpoint, stack, optimizer, rng=rng, generators=(order,),
                    inputs=fingerprint(examples.examples, prompts, cfg, max_length, max_grad_norm, len(pairs)))
    state = saved.resume()  # {} unless a checkpoint of this same training is there
    history: list[dict[str, Any]] = state.get("history", [])
    orders = state.get("orders", orders)
    bar = tqdm(total=total, initial=len(history), desc="dpo policy update", unit="step",
               disable=not (progress and dp.is_main))
    stop = False
    try:
        for epoch in range(cfg.dpo_epochs):
            for index in orders[epoch].split(cfg.dpo_batch_size)[max(0, saved.resumed_from - epoch * per_epoch):]:
                t0 = time.perf_counter()
                mine = index[dp.rank::dp.world]  # this process's share of the step's pairs
                share = len(mine) / len(index)  # the loss and its metrics are means over pairs
                parts = dict.fromkeys(("dpo_loss", "chosen_reward", "rejected_reward", "reward_margin",
                                       "reward_accuracy", "logp_chosen", "logp_rejected"), 0.0)
                if len(mine):
                    stack.model.train()
                    with stack.use("policy"):  # forward and backward under one adapter context (checkpointing)
                        chosen, rejected = pair_logprobs(stack, [pairs[i] for i in mine.tolist()])
                        loss, loss_parts = dpo_loss(chosen, rejected, ref_chosen[mine.to(ref_chosen.device)],
                                                    ref_rejected[mine.to(ref_rejected.device)], cfg.dpo_beta,
                                                    cfg.dpo_label_smoothing)
                        (loss * share).backward()
                    parts = {"dpo_loss": float(loss.detach()), **{k: float(v) for k, v in loss_parts.items()},
                             "logp_chosen": float(chosen.detach().mean()),
                             "logp_rejected": float(rejected.detach().mean())}
                parts = dp.sums({key: value * share for key, value in parts.items()})
                norms = clipped_step(optimizer, max_grad_norm, dp)
                step = len(history)
                # The held-out KL costs about a quarter of a step (two or three passes with full-vocabulary
                # logits), so it is measured every dpo_kl_every steps, and always on the last one.
                measure = step % cfg.dpo_kl_every == 0 or step + 1 == total
                kl = heldout_kl(stack, probe, dp) if measure else dict.fromkeys(HELDOUT_KL_KEYS)
                stop = measure and 0.0 < cfg.max_kl_per_token < kl["heldout_kl_per_token"]
                seconds = time.perf_counter() - t0
                row = {"step": step, "epoch": epoch + 1, **parts, **kl, **norms, "pairs": len(index),
                       "samples": 2 * len(index), "seconds": seconds, "kl_stop": float(stop)}
                history.append({k: finite(v) if isinstance(v, float) else v for k, v in row.items()})
                bar.update(1)
                bar.set_postfix(loss=f"{row['dpo_loss']:.3f}", acc=f"{row['reward_accuracy']:.2f}",
                                kl=show(row["heldout_kl_per_token"], 4))
                if on_step:
                    on_step(history[-1])
                if on_progress:
                    on_progress(len(history) / total, f"dpo step {len(history)}/{total}: loss {row['dpo_loss']:.3f}, "
                                f"implicit reward accuracy {row['reward_accuracy']:.2f}")
                saved.step_done(len(history), history=history, orders=orders)
                if stop:
                    if dp.is_main:
                        bar.write(f"held-out KL to the reference {row['heldout_kl_per_token']:.4f} nats/token "
                                  f"exceeds policy.max_kl_per_token = {cfg.max_kl_per_token}: no more updates "
                                  "this round")
                    break
            if stop:
                break
    finally:
        bar.close()
        stack.freeze_adapters()
        stack.model.eval()

    summary = summarize(history, 0.0, DPO_SUMMARY_KEYS)
    summary.pop("reward_mean_first")  # no rollouts before the update; the reward figures come from after it
    if dp.is_main:  # the summary's fresh samples: only the process that records the version needs them
        summary.update(_after_training(stack, probe_prompts, score_fn, cfg))
    summary.update({"pairs_human": len(pairs) - len(rm_pairs), "pairs_rm": len(rm_pairs),
                    "rm_groups_skipped": rm_skipped, **ranked_by,
                    **{k: v for k, v in examples.stats.items() if k != "decisive"},
                    "epochs": cfg.dpo_epochs, "seconds": time.perf_counter() - started})
    return PolicyTrainResult(history, summary)


def _after_training(stack: ModelStack, prompts: list[list[dict[str, str]]], score_fn: ScoreFn | None,
                    cfg: PolicyConfig) -> dict[str, float | None]:
    """Fresh samples of the trained policy on the probe prompts, measured like a PPO/GRPO rollout."""
    rollout = generate_rollout(stack, prompts, samples_per_prompt=cfg.group_size, max_new_tokens=cfg.max_new_tokens,
                               temperature=cfg.temperature, min_new_tokens=cfg.min_new_tokens)
    scores = score_fn(rollout) if score_fn is not None else None
    metrics = rollout_metrics(rollout, rollout_logprobs(stack, rollout, cfg.minibatch_size), scores)
    return {k: finite(v) for k, v in metrics.items()}

