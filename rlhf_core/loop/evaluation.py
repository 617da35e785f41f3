"""Policy-versus-base evaluation batches and the human win rate measured on them."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from rlhf_core.loop.sampling import generate_responses
from rlhf_core.models.stack import ModelStack
from rlhf_core.training.workspace_stack import activate_policy
from rlhf_core.workspace import Workspace
from storage import (
    Database,
    add_pair_between,
    add_samples,
    judgment_rows,
    list_prompts,
    prompt_messages,
)

EVAL_KIND = "eval_vs_base"
EVAL_PRIORITY = 10  # judged before training pairs, so the win rate arrives early


@dataclass
class EvalBatch:
    policy_version: int
    pair_ids: list[int]


def create_eval_batch(ws: Workspace, db: Database, stack: ModelStack, *, n_prompts: int = 32,
                      progress: bool = True) -> EvalBatch:
    """Pairs of the current policy against version 0 (the base) on eval prompts, one per prompt.

    Which sample is `a` alternates so that position in the pair carries no information.
    """
    version = activate_policy(stack, db)
    if version == 0:
        raise ValueError("the current policy is the base model; train a policy before measuring a win rate")
    prompts = list_prompts(db, split="eval", limit=n_prompts)
    if not prompts:
        raise ValueError("no eval prompts: import some with `rlhf prompts import FILE --split eval`")
    cfg = ws.config.sampling
    gen = dict(max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, top_p=cfg.top_p,
               batch_size=cfg.batch_size)
    conversations = [prompt_messages(p) for p in prompts]
    # All policy samples, then all base samples: the decoding weights switch once, not per batch.
    policy_out = generate_responses(stack, conversations, adapter="policy", progress=progress and "policy", **gen)
    base_out = generate_responses(stack, conversations, adapter=None, progress=progress and "base", **gen)
    params = {**{k: v for k, v in gen.items() if k != "batch_size"}, "purpose": EVAL_KIND}
    pair_ids: list[int] = []
    for i, prompt in enumerate(prompts):
        (policy_sample,) = add_samples(db, prompt_id=prompt.id, policy_version_id=version,
                                       responses=[policy_out[i]], gen_params=params)
        (base_sample,) = add_samples(db, prompt_id=prompt.id, policy_version_id=0,
                                     responses=[base_out[i]], gen_params=params)
        a, b = (policy_sample, base_sample) if i % 2 == 0 else (base_sample, policy_sample)
        pair = add_pair_between(db, prompt_id=prompt.id, sample_a_id=a, sample_b_id=b, round=version,
                                judgments_wanted=ws.config.labeling.judgments_per_pair,
                                priority=EVAL_PRIORITY, kind=EVAL_KIND, selection="eval")
        pair_ids.append(pair.id)
    return EvalBatch(policy_version=version, pair_ids=pair_ids)


def human_win_rates(db: Database) -> dict[int, dict[str, float]]:
    """Per policy version: win rate against the base from eval_vs_base judgments (tie = half a win;
    both-bad judgments are left out) and the number of judgments it rests on."""
    wins: dict[int, float] = defaultdict(float)
    counts: dict[int, int] = defaultdict(int)
    for row in judgment_rows(db, kinds=(EVAL_KIND,)):
        if row.choice == "both_bad" or row.version_a is None or row.version_b is None:  # None: imported
            continue
        policy_side = "a" if row.version_a != 0 else "b"
        version = row.version_a if policy_side == "a" else row.version_b
        counts[version] += 1
        wins[version] += 1.0 if row.choice == policy_side else 0.5 if row.choice == "tie" else 0.0
    return {v: {"win_rate": wins[v] / counts[v], "judgments": counts[v]} for v in counts}
