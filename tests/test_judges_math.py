"""The judges' pure parts, against numbers checked by hand: answers parsed to first/second/tie, two orders combined
into one verdict, Cohen's kappa with its interval, routing decisions, and the judge kinds' table."""

from __future__ import annotations

import pytest

from rlhf_core.algorithms.agreement import cohens_kappa_interval
from rlhf_core.judges.prompting import AnswerError, judge_messages, parse_answer, split_judge_prompt
from rlhf_core.judges.routing import UNSURE_PRIORITY, is_unsure, plan_routes
from rlhf_core.judges.verdicts import OrderAnswer, answer_from_choice, combine
from rlhf_core.registry import JUDGE_KINDS, resolve
from storage import PairToJudge, RouteChange


@pytest.mark.parametrize("text, answer, confidence", [
    ("A is clearer.\nVerdict: A", "first", 1.0), ("**Verdict:** B", "second", 1.0), ("verdict - TIE", "tie", 1.0),
    ("B", "second", 1.0), ("Verdict: A\nConfidence: 80%", "first", 0.8), ("Verdict: B (confidence 0.3)", "second", 0.3),
    ("At first Verdict: A, on reflection Verdict: B", "second", 1.0)])
def test_answers_parse_to_a_side(text: str, answer: str, confidence: float) -> None:
    parsed = parse_answer(text)
    assert (parsed.answer, parsed.confidence) == (answer, pytest.approx(confidence))


@pytest.mark.parametrize("text", ["", "I like turtles", "Both are Alright", None])
def test_an_answer_without_a_verdict_is_refused(text: str | None) -> None:
    with pytest.raises(AnswerError, match="no verdict"):
        parse_answer(text)


def test_the_simulated_endpoint_reads_back_what_a_judge_sends() -> None:
    messages = judge_messages(None, [{"role": "user", "content": "Boil an egg?"}], "8 minutes.", "Microwave it.")
    assert messages[0]["role"] == "system" and "Harmless" in messages[0]["content"]
    conversation, first, second = split_judge_prompt(messages[1]["content"])
    assert (conversation[0]["content"], first, second) == ("Boil an egg?", "8 minutes.", "Microwave it.")


def test_two_orders_make_one_verdict() -> None:
    sure_a = combine(answer_from_choice("first"), answer_from_choice("second"))  # a first: A; b first: B -> a
    assert (sure_a.choice, sure_a.confidence, sure_a.left_picks, sure_a.decisive, sure_a.orders_agree) == \
        ("a", 1.0, 1, 2, True)
    positional = combine(answer_from_choice("first"), answer_from_choice("first"))  # "A" whatever is shown
    assert (positional.choice, positional.confidence, positional.left_picks, positional.orders_agree) == \
        ("tie", 0.0, 2, False)
    # a first: A at 80%; b first: A (= b) at 20%: p(a) = (0.9 + 0.4) / 2 = 0.65 -> a, confidence 0.3.
    lopsided = combine(answer_from_choice("first", 0.8), answer_from_choice("first", 0.2))
    assert (lopsided.choice, lopsided.confidence) == ("a", pytest.approx(0.3))
    soft = combine(OrderAnswer(0.3, "second"), OrderAnswer(0.4, "second"))  # p(a) = (0.3 + 0.6) / 2 = 0.45
    assert (soft.choice, soft.confidence) == ("b", pytest.approx(0.1))


def test_kappa_interval_by_hand() -> None:
    # p_o = 0.75, p_e = (2*1 + 2*3) / 16 = 0.5: kappa 0.5, se = sqrt(0.75 * 0.25 / 4) / 0.5 = 0.4330.
    kappa, lo, hi = cohens_kappa_interval(list("xxyy"), list("xyyy"))
    assert kappa == pytest.approx(0.5) and (lo, hi) == (pytest.approx(0.5 - 1.959964 * 0.4330127, abs=1e-6), 1.0)
    assert cohens_kappa_interval([], []) is None
    assert cohens_kappa_interval(list("aaa"), list("aaa")) == (1.0, 1.0, 1.0)


def pair(pair_id: int, open_: bool = True, kind: str = "train") -> PairToJudge:
    return PairToJudge(pair_id, kind, [], "x", "y", open_)


def test_routing_sends_people_the_unsure_pairs_and_closes_a_share_of_the_sure() -> None:
    sure_a = combine(answer_from_choice("first"), answer_from_choice("second"))
    tie = combine(answer_from_choice("first"), answer_from_choice("first"))
    assert not is_unsure(sure_a, None, 0.5) and is_unsure(tie, None, 0.5)
    assert is_unsure(sure_a, -0.7, 0.5) and not is_unsure(sure_a, 0.7, 0.5)  # the reward model says b: unsure
    judged = [(pair(1), sure_a), (pair(2), tie), (pair(3), sure_a), (pair(4, open_=False), tie),
              (pair(5, kind="control"), tie)]
    routes = plan_routes(judged, {3: -1.0}, uncertain_below=0.5, share=0.0, seed="s")
    assert routes == [RouteChange(1, close=True), RouteChange(2, priority=UNSURE_PRIORITY),
                      RouteChange(3, priority=UNSURE_PRIORITY)]
    assert plan_routes(judged, {}, uncertain_below=0.5, share=1.0, seed="s") == [
        RouteChange(2, priority=UNSURE_PRIORITY)]  # every sure pair still goes to people


def test_every_judge_kind_names_code_that_exists() -> None:
    assert JUDGE_KINDS.names() == ("openai", "hf", "reward-model")
    for kind in JUDGE_KINDS.values():
        assert callable(resolve(kind.build)) and callable(resolve(kind.check))
        assert set(kind.needs) <= set(kind.takes)
