"""One pair, two orders, one verdict. A judge answers for a pair shown in one order (`OrderAnswer`: how likely
the response shown first is the better one); every pair is shown both ways, and `combine` turns the two answers
into the stored judgment, so that a judge that prefers whatever comes first ends up unsure, not wrong.

The two orders' probabilities that side a is better are averaged: two answers that agree keep their confidence,
two that disagree cancel out (a tie when they are equally sure, else the surer one's side at low confidence).
Confidence is |2 p(a) - 1|: 0 is a coin flip, 1 is certain.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

TIE_WITHIN = 1e-6  # |p(a) - 1/2| below this is a tie


class JudgeUnavailable(RuntimeError):
    """A judge could not answer (endpoint down, too slow, rate-limited, answering garbage) after its retries; the
    message is one line naming the judge. The run stores nothing."""


@dataclass(frozen=True)
class Shown:
    """A pair as a judge sees it in one order."""

    prompt_messages: list[dict[str, str]]
    first: str
    second: str


@dataclass(frozen=True)
class OrderAnswer:
    p_first: float  # probability that the response shown first is the better one
    answer: str  # the raw answer: "first", "second" or "tie"
    rationale: str | None = None


class RequestCapReached(Exception):  # noqa: N818 - a stop, not an error
    """A judge reached its run's request cap; `answers` are those of the items before it."""

    def __init__(self, answers: list[OrderAnswer]) -> None:
        super().__init__(f"request cap reached after {len(answers)} answers")
        self.answers = answers


@dataclass
class Usage:
    """What a judge has spent in a run: requests (or forward passes) and tokens in and out."""

    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0


class PairJudge(Protocol):
    """What a judge kind builds (`rlhf_core.registry.JUDGE_KINDS`)."""

    usage: Usage

    def judge(self, items: Sequence[Shown]) -> list[OrderAnswer]:
        """One answer per item, in order; JudgeUnavailable when it cannot answer, RequestCapReached at the cap."""
        ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class Verdict:
    choice: str  # "a", "b" or "tie", in the pair's own terms
    confidence: float
    p_a: float
    left_picks: int  # of the two raw answers, those that picked the response shown first ...
    decisive: int  # ... out of those that picked a side: the judge's left-bias figure
    rationale: str | None = None
    orders_agree: bool = field(default=True)


def answer_from_choice(answer: str, confidence: float = 1.0, rationale: str | None = None) -> OrderAnswer:
    """An answer that names a side ("first", "second", "tie") with a confidence in [0, 1]."""
    p = {"first": 0.5 + confidence / 2, "second": 0.5 - confidence / 2, "tie": 0.5}[answer]
    return OrderAnswer(p, answer, rationale)


def combine(a_first: OrderAnswer, b_first: OrderAnswer, rationale: str | None = None) -> Verdict:
    """The verdict on a pair from its two orders: `a_first` showed a first, `b_first` showed b first."""
    p_a = (a_first.p_first + (1.0 - b_first.p_first)) / 2.0
    choice = "tie" if abs(p_a - 0.5) < TIE_WITHIN else ("a" if p_a > 0.5 else "b")
    raw = (a_first.answer, b_first.answer)
    agree = {"first": "a", "second": "b"}.get(raw[0], "tie") == {"first": "b", "second": "a"}.get(raw[1], "tie")
    return Verdict(choice=choice, confidence=round(abs(2.0 * p_a - 1.0), 6), p_a=p_a,
                   left_picks=sum(r == "first" for r in raw), decisive=sum(r != "tie" for r in raw),
                   rationale=rationale, orders_agree=agree)
