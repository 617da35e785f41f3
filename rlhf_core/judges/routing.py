"""Which pairs people get once a judge has judged them (`labeling.route = "judge_uncertain"`): first the pairs the
judge is unsure of (confidence below `judges.uncertain_below`, a tie, or a side the current reward model's margin
disagrees with), raised to UNSURE_PRIORITY; of the pairs it is sure of, a seeded `labeling.judge_share` sample stays
as it is, so its agreement with people keeps being measured; the rest are closed to people (the judge's label
stands). Pure: decisions only, `storage.record_ai_judgments` applies them with the judgments."""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence

from rlhf_core.judges.verdicts import Verdict
from storage import PairToJudge, RouteChange

UNSURE_PRIORITY = 1  # above sampled pairs (0), below evaluation batches (loop.evaluation.EVAL_PRIORITY)


def is_unsure(verdict: Verdict, margin: float | None, uncertain_below: float) -> bool:
    """The judge is unsure, or the reward model's margin (score of a minus score of b) points the other way."""
    if verdict.choice not in ("a", "b") or verdict.confidence < uncertain_below:
        return True
    return margin is not None and margin != 0 and (margin > 0) != (verdict.choice == "a")


def plan_routes(judged: Sequence[tuple[PairToJudge, Verdict]], margins: Mapping[int, float], *,
                uncertain_below: float, share: float, seed: str) -> list[RouteChange]:
    """The routing of the open training pairs among `judged` (control pairs and pairs people have finished are
    left alone)."""
    changes = []
    for pair, verdict in judged:
        if not pair.open or pair.kind == "control":
            continue
        if is_unsure(verdict, margins.get(pair.pair_id), uncertain_below):
            changes.append(RouteChange(pair.pair_id, priority=UNSURE_PRIORITY))
        elif random.Random(f"{seed}-{pair.pair_id}").random() >= share:
            changes.append(RouteChange(pair.pair_id, close=True))
    return changes
