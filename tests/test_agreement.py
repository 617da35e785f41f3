"""Annotation-quality metrics against published and hand-computed examples."""

from __future__ import annotations

import pytest

from rlhf_core.algorithms.agreement import (
    cohens_kappa,
    fleiss_kappa,
    majority_agreement,
    position_bias,
    tie_rate,
)

# Fleiss (1971) worked example as given on Wikipedia: 10 subjects, 14 raters each, 5 categories;
# each row is how many raters put the subject in category 1..5. P̄ = 0.378, P_e = 0.213, κ = 0.210.
FLEISS_TABLE = [
    [0, 0, 0, 0, 14],
    [0, 2, 6, 4, 2],
    [0, 0, 3, 5, 6],
    [0, 3, 9, 2, 0],
    [2, 2, 8, 1, 1],
    [7, 7, 0, 0, 0],
    [3, 2, 6, 3, 0],
    [2, 5, 3, 2, 2],
    [6, 5, 2, 1, 0],
    [0, 2, 2, 3, 7],
]
CATEGORIES = ["1", "2", "3", "4", "5"]


def test_fleiss_kappa_wikipedia_example() -> None:
    items = [[cat for cat, n in zip(CATEGORIES, row, strict=True) for _ in range(n)] for row in FLEISS_TABLE]
    assert all(len(labels) == 14 for labels in items)
    kappa = fleiss_kappa(items, CATEGORIES)
    assert kappa == pytest.approx(0.210, abs=5e-4)


def test_fleiss_kappa_varying_raters_hand_example() -> None:
    # P_1 = (4 − 2)/2 = 1, P_2 = (1 + 4 − 3)/6 = 1/3 -> P̄ = 2/3; p = (3/5, 2/5) -> P_e = 0.52.
    items = [["a", "a"], ["a", "b", "b"], ["b"]]  # the single-rating item is skipped
    assert fleiss_kappa(items, ["a", "b"]) == pytest.approx((2 / 3 - 0.52) / 0.48)


def test_fleiss_kappa_edge_cases() -> None:
    assert fleiss_kappa([["a"], []], ["a", "b"]) is None
    assert fleiss_kappa([["a", "a"], ["a", "a", "a"]], ["a", "b"]) == 1.0
    assert fleiss_kappa([["a", "a"], ["b", "b"]], ["a", "b"]) == pytest.approx(1.0)
    assert fleiss_kappa([["a", "b"], ["b", "a"]], ["a", "b"]) == pytest.approx(-1.0)
    with pytest.raises(ValueError, match="item 1"):
        fleiss_kappa([["a", "b"], ["a", "c"]], ["a", "b"])


def test_cohens_kappa_hand_example() -> None:
    # 50 items: both yes 20, A yes/B no 5, A no/B yes 10, both no 15.
    # p_o = 0.7; A says yes 0.5, B says yes 0.6 -> p_e = 0.5·0.6 + 0.5·0.4 = 0.5; κ = 0.4
    a = ["yes"] * 25 + ["no"] * 25
    b = ["yes"] * 20 + ["no"] * 5 + ["yes"] * 10 + ["no"] * 15
    assert cohens_kappa(a, b) == pytest.approx(0.4)


def test_cohens_kappa_edge_cases() -> None:
    assert cohens_kappa(["x", "y"], ["y", "x"]) == pytest.approx(-1.0)
    assert cohens_kappa(["x", "x"], ["x", "x"]) == 1.0
    assert cohens_kappa([], []) is None
    with pytest.raises(ValueError):
        cohens_kappa(["x"], ["x", "y"])


def test_position_bias() -> None:
    assert position_bias(30, 40) == 0.75
    assert position_bias(0, 0) is None
    with pytest.raises(ValueError):
        position_bias(5, 3)


def test_majority_agreement_against_the_other_raters() -> None:
    items = {
        "i1": {"A": "x", "B": "x", "C": "x", "D": "y"},  # A, B, C agree; D disagrees
        "i2": {"A": "x", "B": "y"},  # each disagrees with the one other rater
        "i3": {"A": "x", "B": "y", "C": "z"},  # others always tied -> skipped for everyone
        "i4": {"D": "y"},  # one rating -> skipped
        "i5": {"C": "y", "D": "y", "A": "x"},  # C, D see a tie (y vs x); A disagrees with y, y
        "i6": {"E": "x"},  # E has no counted item
    }
    assert majority_agreement(items) == pytest.approx({"A": 1 / 3, "B": 0.5, "C": 1.0, "D": 0.0})


def test_tie_rate() -> None:
    assert tie_rate(["left", "tie", "right", "tie"]) == 0.5
    assert tie_rate(["a", "same"], tie_label="same") == 0.5
    assert tie_rate([]) is None
