"""A judge run (the worker's `judge` job, `rlhf judge run`): the pairs this judge has not judged yet
(`storage.pairs_for_judge`: control pairs, then open pairs, then pairs people judged), each shown in both orders,
the two answers combined (`verdicts.combine`), and everything stored in one transaction at the end with the run's
totals and, with `labeling.route = "judge_uncertain"`, the routing of the open pairs (`routing`). A judge that
fails (down, slow, 429, garbage, after its retries) fails the run with one line naming it, and nothing is stored;
one that reaches the run's request cap stores the pairs it judged in both orders before it.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass

from rlhf_core.judges.routing import plan_routes
from rlhf_core.judges.verdicts import JudgeUnavailable, OrderAnswer, PairJudge, RequestCapReached, Shown, combine
from rlhf_core.registry import JUDGE_KINDS, resolve
from rlhf_core.workspace import Workspace
from storage import AIJudgment, Database, PairToJudge, get_judge, pairs_for_judge, record_ai_judgments

MarginFn = Callable[[Sequence[PairToJudge]], Mapping[int, float]]
ProgressFn = Callable[[float, str], None]
MAX_PAIRS_PER_RUN = 100_000


@dataclass
class JudgeRun:
    """What a run did: pairs judged and stored, their ties, the raw answers' first-position picks (the left-bias
    figure), what the judge spent, the routing, and why it stopped."""

    judge: str
    pairs: int = 0
    stored: int = 0
    ties: int = 0
    orders_disagreed: int = 0
    left_picks: int = 0
    decisive_answers: int = 0
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    people_first: int = 0
    closed_to_people: int = 0
    stopped: str = "done"

    def metrics(self) -> dict[str, int | str]:
        return asdict(self)


def both_orders(pair: PairToJudge) -> tuple[Shown, Shown]:
    a_first = Shown(pair.prompt_messages, pair.text_a, pair.text_b)
    return a_first, Shown(pair.prompt_messages, pair.text_b, pair.text_a)


def active_judge(db: Database, name: str):  # noqa: ANN201 - a storage.JudgeRow
    """The judge's row; JudgeUnavailable (one line) when there is none or it is disabled."""
    row = get_judge(db, name)
    if row is None:
        raise JudgeUnavailable(f"no judge named {name!r}; `rlhf judge list` shows them")
    if not row.active:
        raise JudgeUnavailable(f"judge {name!r} is disabled")
    return row


def run_judge(ws: Workspace, db: Database, name: str, *, pairs: int | None = None, max_requests: int | None = None,
              margins: MarginFn | None = None, on_progress: ProgressFn | None = None,
              build: Callable[..., PairJudge] | None = None) -> JudgeRun:
    """Judge up to `pairs` (judges.pairs_per_run) pairs with judge `name` in at most `max_requests`
    (judges.max_requests) requests. `margins`: the current reward model's score margins (a minus b) of open pairs,
    for routing. `build`: the kind's builder (the registry's by default)."""
    cfg = ws.config
    row = active_judge(db, name)
    cap = max_requests or cfg.judges.max_requests
    todo = pairs_for_judge(db, row.annotator_id, min(pairs or cfg.judges.pairs_per_run, cap // 2, MAX_PAIRS_PER_RUN))
    result = JudgeRun(judge=name)
    if not todo:
        result.stopped = "no pairs left to judge"
        return result
    builder = build or resolve(JUDGE_KINDS.require(row.kind).build)
    judge = builder(name, row.settings, row.rubric, cfg.judges, max_requests=cap, cache_dir=ws.model_cache_dir())
    judged: list[tuple[PairToJudge, object]] = []
    try:
        for start in range(0, len(todo), cfg.judges.batch_size):
            chunk = todo[start:start + cfg.judges.batch_size]
            try:
                answers = judge.judge([shown for pair in chunk for shown in both_orders(pair)])
            except RequestCapReached as stop:
                answers, result.stopped = stop.answers, f"request cap ({cap}) reached"
            judged += _verdicts(chunk, answers)
            if on_progress is not None:
                on_progress(len(judged) / len(todo), f"judge {name}: {len(judged)}/{len(todo)} pairs")
            if result.stopped != "done":
                break
    finally:
        result.requests, result.prompt_tokens = judge.usage.requests, judge.usage.prompt_tokens
        result.completion_tokens = judge.usage.completion_tokens
        judge.close()
    return _store(ws, db, row, judged, margins, result)


def _verdicts(chunk: Sequence[PairToJudge], answers: Sequence[OrderAnswer]) -> list[tuple[PairToJudge, object]]:
    """The chunk's pairs answered in both orders, each with its verdict (a pair cut by the cap is left out)."""
    return [(pair, combine(answers[2 * i], answers[2 * i + 1], _rationale(answers[2 * i], answers[2 * i + 1])))
            for i, pair in enumerate(chunk) if 2 * i + 1 < len(answers)]


def _rationale(a_first: OrderAnswer, b_first: OrderAnswer) -> str:
    return (f"[a shown first] {a_first.rationale or a_first.answer}\n"
            f"[b shown first] {b_first.rationale or b_first.answer}")


def _store(ws: Workspace, db: Database, row, judged, margins: MarginFn | None, result: JudgeRun  # noqa: ANN001
           ) -> JudgeRun:
    labeling, rng = ws.config.labeling, random.Random(f"sides-{row.name}-{row.annotator_id}")
    stored = [AIJudgment(pair.pair_id, v.choice, v.confidence, v.rationale, rng.choice("ab")) for pair, v in judged]
    routes = []
    if labeling.route == "judge_uncertain":
        open_pairs = [pair for pair, _ in judged if pair.open and pair.kind != "control"]
        found = dict(margins(open_pairs)) if margins is not None and open_pairs else {}
        routes = plan_routes(judged, found, uncertain_below=ws.config.judges.uncertain_below,
                             share=labeling.judge_share, seed=row.name)
    result.pairs = len(judged)
    result.ties = sum(v.choice == "tie" for _, v in judged)
    result.orders_disagreed = sum(not v.orders_agree for _, v in judged)
    result.left_picks = sum(v.left_picks for _, v in judged)
    result.decisive_answers = sum(v.decisive for _, v in judged)
    result.people_first = sum(r.priority is not None for r in routes)
    result.closed_to_people = sum(r.close for r in routes)
    totals = {k: getattr(result, k) for k in ("pairs", "left_picks", "decisive_answers", "requests", "prompt_tokens",
                                              "completion_tokens", "orders_disagreed")}
    result.stored = record_ai_judgments(db, row.annotator_id, stored, stats={**totals, "runs": 1}, routes=routes)
    return result
