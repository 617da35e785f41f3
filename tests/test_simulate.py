"""Gold preferences and simulated annotators judging through the same storage path as people.

Tests taking `db` run on SQLite and on PostgreSQL."""

from __future__ import annotations

import uuid
from collections import Counter
from pathlib import Path

import pytest
from sqlmodel import func, select

from rlhf_core.registry import GOLDS
from rlhf_core.simulator.gold import GoldPreferenceError, get_gold, gold_win_rate
from rlhf_core.simulator.simulate import SimulationError, simulate_annotators
from storage import (
    SCREEN_PICKS,
    Database,
    JudgmentError,
    Lease,
    Prompt,
    add_prompts,
    choice_from_screen,
    content_hash,
    ensure_base_policy,
    judgment_rows,
    record_generations,
    set_active,
)

NO_PROMPT: list[dict[str, str]] = []


def add_pairs(db: Database, texts: list[tuple[str, str]], *, k: int = 1, kind: str = "train") -> list[int]:
    """One pair per (text_a, text_b), each on its own prompt, wanting `k` judgments."""
    pair_ids = []
    for text_a, text_b in texts:
        messages = [{"role": "user", "content": f"question {uuid.uuid4().hex}"}]
        add_prompts(db, [messages])
        with db.session() as s:
            prompt_id = s.exec(select(Prompt.id).where(Prompt.content_hash == content_hash(messages))).one()
        (pair,) = record_generations(db, prompt_id=prompt_id, policy_version_id=0, responses=[(text_a, 1), (text_b, 1)],
                                     gen_params={}, pairs=[(0, 1)], judgments_wanted=k, kind=kind)
        pair_ids.append(pair.id)
    return pair_ids


# Lengths differ in both directions, plus one equal-length pair that must come out a tie.
LENGTH_PAIRS = [("x" * n, "y" * m) for n, m in [(1, 5), (9, 2), (3, 4), (8, 6), (2, 7), (10, 1), (4, 9), (6, 3)]]
LENGTH_PAIRS.append(("same", "size"))


def chosen_and_rejected(row) -> tuple[str, str]:  # noqa: ANN001 - a JudgmentRow
    return (row.text_a, row.text_b) if row.choice == "a" else (row.text_b, row.text_a)


# -- gold preferences -------------------------------------------------------------------------------


def test_gold_preferences_score_hand_examples():
    sentiment = get_gold("sentiment")
    assert sentiment(NO_PROMPT, "I love this, wonderful!") > 0.5 > -0.3 > sentiment(NO_PROMPT, "This is terrible.")
    assert get_gold("longer")(NO_PROMPT, "abcd") == 4.0 and get_gold("LENGTH")(NO_PROMPT, "abc") == 3.0
    assert get_gold("shorter")(NO_PROMPT, "ab") > get_gold("shorter")(NO_PROMPT, "abc")
    please = get_gold("keyword", keyword="please")
    assert please(NO_PROMPT, "Please help, please! I was pleased.") == 2.0  # whole words only
    assert get_gold("keyword")(NO_PROMPT, "You and yours: thank you.") == 2.0  # the default word, "you"
    assert get_gold("keyword", keyword="thank you")(NO_PROMPT, "Thank you, thank you") == 2.0
    assert get_gold("keyword", keyword="Hi", case_sensitive=True)(NO_PROMPT, "Hi hi HI") == 1.0
    concise = get_gold("concise", target=5)  # minus the distance from 5 characters, either side
    assert [concise(NO_PROMPT, t) for t in ("abcde", "abc", "abcdefg", " abcde\n", "")] == [0.0, -2.0, -2.0, 0.0, -5.0]
    assert get_gold("concise")(NO_PROMPT, "x" * 150) == 0.0 > get_gold("concise")(NO_PROMPT, "x" * 149)
    assert set(GOLDS) == {"sentiment", "longer", "shorter", "concise", "keyword"}


def test_get_gold_errors_list_what_is_available():
    available = r"available: concise, keyword, longer \(alias: length\), sentiment, shorter"
    with pytest.raises(GoldPreferenceError, match=available):
        get_gold("politeness")
    with pytest.raises(GoldPreferenceError, match="'longer' does not take keyword; it takes no options"):
        get_gold("length", keyword="please")
    with pytest.raises(GoldPreferenceError, match="non-empty keyword"):
        get_gold("keyword", keyword="  ")
    with pytest.raises(GoldPreferenceError, match="target of at least 1 character"):
        get_gold("concise", target=0)


def test_gold_win_rate_counts_ties_half():
    assert gold_win_rate([3.0, 1.0, 2.0, 0.0], [1.0, 1.0, 5.0, -1.0]) == pytest.approx((1 + 0.5 + 0 + 1) / 4)
    with pytest.raises(ValueError, match="paired"):
        gold_win_rate([1.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="at least one"):
        gold_win_rate([], [])


def test_screen_pick_maps_back_to_the_pair_sides():
    assert [choice_from_screen(p, "a") for p in SCREEN_PICKS] == ["a", "b", "tie", "both_bad"]
    assert [choice_from_screen(p, "b") for p in SCREEN_PICKS] == ["b", "a", "tie", "both_bad"]
    with pytest.raises(JudgmentError):
        choice_from_screen("up", "a")


# -- simulated annotators (SQLite and PostgreSQL) ---------------------------------------------------


def test_noise_free_annotators_agree_with_gold(db):
    add_pairs(db, LENGTH_PAIRS)
    result = simulate_annotators(db, annotators=2, judgments=100, gold="longer", seed=1, progress=False)
    assert result.judgments == len(LENGTH_PAIRS) and result.ties == 1 and result.flipped == 0
    rows = judgment_rows(db)
    assert {r.left_side for r in rows} == {"a", "b"}  # sides really were randomised, and mapped back
    for row in rows:
        if len(row.text_a) == len(row.text_b):
            assert row.choice == "tie"
        else:
            chosen, rejected = chosen_and_rejected(row)
            assert len(chosen) > len(rejected)


def test_fully_noisy_annotators_disagree_with_gold_on_every_decisive_pair(db):
    add_pairs(db, LENGTH_PAIRS)
    result = simulate_annotators(db, annotators=1, judgments=100, gold="length", noise=1.0, progress=False)
    decisive = [r for r in judgment_rows(db) if r.choice in ("a", "b")]
    assert len(decisive) == result.flipped == len(LENGTH_PAIRS) - 1
    for row in decisive:
        chosen, rejected = chosen_and_rejected(row)
        assert len(chosen) < len(rejected)


def test_two_annotators_each_judge_every_pair_wanting_two(db):
    pair_ids = add_pairs(db, [("I love this, wonderful!", "This is terrible.")] * 4, k=2)
    result = simulate_annotators(db, annotators=2, judgments=8, gold="sentiment", progress=False)
    assert result.judgments == 8 and result.per_annotator == {"sim-1": 4, "sim-2": 4}
    rows = judgment_rows(db)
    by_pair = {pid: sorted(r.annotator for r in rows if r.pair_id == pid) for pid in pair_ids}
    assert by_pair == {pid: ["sim-1", "sim-2"] for pid in pair_ids}
    assert all(chosen_and_rejected(r)[0] == "I love this, wonderful!" for r in rows)


def test_stops_cleanly_when_no_pairs_are_left_and_reuses_its_users(db):
    add_pairs(db, LENGTH_PAIRS[:3])
    result = simulate_annotators(db, annotators=3, judgments=10, gold="shorter", progress=False)
    assert result.judgments == 3 and result.stopped == "no pairs left"
    with db.session() as s:
        assert s.exec(select(func.count()).select_from(Lease)).one() == 0  # nothing left leased
    again = simulate_annotators(db, annotators=3, judgments=10, gold="shorter", progress=False)
    assert again.judgments == 0 and again.stopped == "no pairs left"
    assert sum(Counter(r.annotator for r in judgment_rows(db)).values()) == 3


def test_pairs_of_other_kinds_are_passed_on_when_kinds_is_given(db):
    (train,) = add_pairs(db, LENGTH_PAIRS[:1])
    (versus_base,) = add_pairs(db, LENGTH_PAIRS[1:2], kind="eval_vs_base")
    result = simulate_annotators(db, annotators=1, judgments=5, gold="longer", kinds=("train",), progress=False)
    assert (result.judgments, result.skipped) == (1, 1)
    assert [r.pair_id for r in judgment_rows(db, kinds=("train", "eval_vs_base"))] == [train]
    result = simulate_annotators(db, annotators=2, judgments=5, gold="longer", progress=False)
    assert result.judgments == 1 and judgment_rows(db, kinds=("eval_vs_base",))[0].pair_id == versus_base


def test_disabled_simulated_user_and_bad_arguments_are_refused(db):
    add_pairs(db, LENGTH_PAIRS[:1])
    simulate_annotators(db, annotators=1, judgments=0, gold="longer", progress=False)
    set_active(db, "sim-1", False)
    with pytest.raises(SimulationError, match="'sim-1' is disabled"):
        simulate_annotators(db, annotators=1, judgments=1, gold="longer", progress=False)
    with pytest.raises(SimulationError, match="noise"):
        simulate_annotators(db, annotators=1, judgments=1, gold="longer", noise=1.5, progress=False)
    with pytest.raises(GoldPreferenceError):
        simulate_annotators(db, annotators=1, judgments=1, gold="nope", progress=False)


def test_same_seed_gives_the_same_judgments(tmp_path: Path):
    def run(name: str, seed: int) -> list[tuple[int, str, str, str]]:
        db = Database(f"sqlite:///{tmp_path / name}")
        db.upgrade()
        ensure_base_policy(db)
        add_pairs(db, LENGTH_PAIRS, k=2)
        simulate_annotators(db, annotators=3, judgments=15, gold="longer", noise=0.3, seed=seed, progress=False)
        rows = [(r.pair_id, r.annotator, r.choice, r.left_side) for r in judgment_rows(db)]
        db.dispose()
        return rows

    first = run("one.db", seed=7)
    assert len(first) == 15 and first == run("two.db", seed=7)
    assert first != run("three.db", seed=8)
