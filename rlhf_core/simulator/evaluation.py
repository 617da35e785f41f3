"""The simulator's view of a policy version: its answers and the base's on the eval prompts, judged by a
scripted gold preference (`rlhf demo`, `bench/loop_efficacy.py`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from rlhf_core.loop.sampling import generate_responses
from rlhf_core.models.stack import ModelStack
from rlhf_core.simulator.gold import gold_win_rate
from rlhf_core.training.workspace_stack import activate_policy
from rlhf_core.workspace import Workspace
from storage import Database, list_prompts, prompt_messages


@dataclass
class GoldEvaluation:
    """Policy against base on the same eval prompts, judged by a scripted gold preference."""

    policy_version: int
    prompts: int
    win_rate: float  # share of prompts where the policy's response scores higher (ties count half)
    policy_gold_mean: float
    base_gold_mean: float
    policy_length_mean: float
    base_length_mean: float
    policy_scores: list[float] = field(default_factory=list)  # gold score per eval prompt, in prompt order
    base_scores: list[float] = field(default_factory=list)
    base_responses: list[tuple] = field(default_factory=list)  # (text, tokens, finish): reusable next round


def gold_evaluation(ws: Workspace, db: Database, stack: ModelStack, gold, *, n_prompts: int = 48,  # noqa: ANN001
                    seed: int = 0, progress: bool = False,
                    base_responses: list[tuple] | None = None) -> GoldEvaluation:
    """Sample the current policy and the base once per eval prompt and compare them with `gold`.

    The base is sampled with its own seed, so its responses do not depend on the policy's; pass an earlier
    evaluation's `base_responses` (same prompts and settings) to skip sampling the unchanged base again.
    """
    import torch

    version = activate_policy(stack, db)
    prompts = list_prompts(db, split="eval", limit=n_prompts)
    if not prompts:
        raise ValueError("no eval prompts: import some with `rlhf prompts import FILE --split eval`")
    cfg = ws.config.sampling
    conversations = [prompt_messages(p) for p in prompts]
    gen = dict(max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, top_p=cfg.top_p,
               batch_size=cfg.batch_size)
    torch.manual_seed(seed)
    policy_out = generate_responses(stack, conversations, adapter="policy", progress=progress and "gold eval: policy",
                                    **gen)
    if base_responses is not None and len(base_responses) == len(conversations):
        base_out = base_responses
    else:
        torch.manual_seed(seed + 1)
        base_out = generate_responses(stack, conversations, adapter=None, progress=progress and "gold eval: base",
                                      **gen)
    policy_scores = [gold(c, text) for c, (text, *_) in zip(conversations, policy_out)]
    base_scores = [gold(c, text) for c, (text, *_) in zip(conversations, base_out)]
    return GoldEvaluation(
        policy_version=version, prompts=len(prompts), win_rate=gold_win_rate(policy_scores, base_scores),
        policy_gold_mean=sum(policy_scores) / len(policy_scores), base_gold_mean=sum(base_scores) / len(base_scores),
        policy_length_mean=sum(r[1] for r in policy_out) / len(policy_out),
        base_length_mean=sum(r[1] for r in base_out) / len(base_out),
        policy_scores=policy_scores, base_scores=base_scores, base_responses=list(base_out),
    )
