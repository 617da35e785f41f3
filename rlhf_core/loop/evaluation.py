"""Policy-versus-base evaluation batches and the human win rate measured on them."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from rlhf_core.algorithms.agreement import wilson_interval
from rlhf_core.loop.sampling import generate_responses
from rlhf_core.models.stack import ModelStack
from rlhf_core.training.workspace_stack import activate_policy
from rlhf_core.workspace import Workspace
from storage import (
    Database,
    add_pair_between,
    add_samples,
    get_policy,
    judgment_rows,
    list_prompts,
    prompt_messages,
)

EVAL_KIND = "eval_vs_base"
PREVIOUS_KIND = "eval_vs_previous"  # the current version against its predecessor (when that is not the base)
EVAL_PRIORITY = 10  # judged before training pairs, so the win rate arrives early


@dataclass
class EvalBatch:
    policy_version: int
    pair_ids: list[int]


def create_eval_batch(ws: Workspace, db: Database, stack: ModelStack, *, n_prompts: int = 32,
                      progress: bool = True) -> EvalBatch:
    """Pairs of the current policy against version 0 (the base) on eval prompts, one per prompt, and, when the
    current version's predecessor is not the base, against that predecessor too (pairs of kind PREVIOUS_KIND).

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
    opponents = [(0, base_out, EVAL_KIND)]
    parent = get_policy(db, version).parent_id
    if parent:  # the predecessor's answers, through its adapter
        activate_policy(stack, db, parent)
        previous_out = generate_responses(stack, conversations, adapter="policy", progress=progress and "previous",
                                          **gen)
        activate_policy(stack, db, version)
        opponents.append((parent, previous_out, PREVIOUS_KIND))
    pair_ids: list[int] = []
    k = ws.config.labeling.judgments_per_pair
    for opponent, answers, kind in opponents:
        params = {**{key: v for key, v in gen.items() if key != "batch_size"}, "purpose": kind}
        for i, prompt in enumerate(prompts):
            (policy_sample,) = add_samples(db, prompt_id=prompt.id, policy_version_id=version,
                                           responses=[policy_out[i]], gen_params=params)
            (other,) = add_samples(db, prompt_id=prompt.id, policy_version_id=opponent, responses=[answers[i]],
                                   gen_params=params)
            a, b = (policy_sample, other) if i % 2 == 0 else (other, policy_sample)
            pair = add_pair_between(db, prompt_id=prompt.id, sample_a_id=a, sample_b_id=b, round=version,
                                    judgments_wanted=k, priority=EVAL_PRIORITY, kind=kind, selection="eval")
            pair_ids.append(pair.id)
    return EvalBatch(policy_version=version, pair_ids=pair_ids)


def human_win_rates(db: Database, kind: str = EVAL_KIND) -> dict[int, dict[str, Any]]:
    """Per policy version: its win rate in evaluation pairs of `kind` (against the base, or against its
    predecessor) from people's judgments (tie = half a win; both-bad judgments are left out), the number of
    judgments it rests on, and its 95% Wilson interval."""
    wins: dict[int, float] = defaultdict(float)
    counts: dict[int, int] = defaultdict(int)
    for row in judgment_rows(db, kinds=(kind,)):
        if row.choice == "both_bad" or row.version_a is None or row.version_b is None:  # None: imported
            continue
        policy_side = "a" if row.version_a > row.version_b else "b"  # the newer version is the one measured
        version = max(row.version_a, row.version_b)
        counts[version] += 1
        wins[version] += 1.0 if row.choice == policy_side else 0.5 if row.choice == "tie" else 0.0
    return {v: {"win_rate": wins[v] / counts[v], "judgments": counts[v], "wins": wins[v],
                "interval": list(wilson_interval(wins[v], counts[v]))} for v in counts}
