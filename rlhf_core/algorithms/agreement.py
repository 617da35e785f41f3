"""Annotation-quality metrics for the operator page: inter-rater agreement, position bias, ties, and
each annotator's accuracy on control pairs and agreement with the majority, with Wilson intervals.

Plain Python on lists and dicts (no numpy, no torch). Functions return None when there is not
enough data to say anything, rather than a misleading 0.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Hashable, Iterable, Mapping, Sequence
from statistics import NormalDist
from typing import Any, TypeVar

AnnotatorT = TypeVar("AnnotatorT", bound=Hashable)
Z_95 = NormalDist().inv_cdf(0.975)  # 1.959964: two-sided 95%


def fleiss_kappa(items: Sequence[Sequence[str]], categories: Sequence[str]) -> float | None:
    """Fleiss' kappa for many raters, generalized to a varying number of raters n_i per item.

    items: for each item, the labels its raters gave; items with fewer than 2 labels are skipped.
    categories: every allowed label. Returns kappa in [-1, 1], None when no item has 2 labels,
    and 1.0 when every label falls in one category (chance agreement is then 1 as well).
    """
    allowed = set(categories)
    rated = [list(labels) for labels in items if len(labels) >= 2]
    if not rated:
        return None
    category_totals: Counter[str] = Counter()
    per_item_agreement = []
    for index, labels in enumerate(rated):
        unknown = set(labels) - allowed
        if unknown:
            raise ValueError(
                f"item {index} has label(s) {sorted(unknown)} not in categories {list(categories)}"
            )
        counts = Counter(labels)
        n = len(labels)
        per_item_agreement.append((sum(c * c for c in counts.values()) - n) / (n * (n - 1)))
        category_totals.update(counts)
    observed = sum(per_item_agreement) / len(per_item_agreement)
    total = sum(category_totals.values())
    expected = sum((count / total) ** 2 for count in category_totals.values())
    if expected >= 1.0 - 1e-12:
        return 1.0
    return (observed - expected) / (1.0 - expected)


def cohens_kappa(a: Sequence[str], b: Sequence[str]) -> float | None:
    """Cohen's kappa between two raters who labelled the same items in the same order.

    Returns None for no items, 1.0 when both raters used one and the same label throughout.
    """
    if len(a) != len(b):
        raise ValueError(f"cohens_kappa needs paired labels; got {len(a)} and {len(b)}")
    n = len(a)
    if n == 0:
        return None
    observed = sum(x == y for x, y in zip(a, b, strict=True)) / n
    counts_a, counts_b = Counter(a), Counter(b)
    expected = sum(counts_a[c] * counts_b[c] for c in counts_a) / (n * n)
    if expected >= 1.0 - 1e-12:
        return 1.0
    return (observed - expected) / (1.0 - expected)


def position_bias(left_picks: int, decisive: int) -> float | None:
    """Share of decisive (non-tie) judgments that picked the response shown on the left.

    0.5 means no position bias. Returns None when there are no decisive judgments.
    """
    if not 0 <= left_picks <= decisive:
        raise ValueError(f"left_picks must be between 0 and decisive ({decisive}), got {left_picks}")
    if decisive == 0:
        return None
    return left_picks / decisive


def majority_agreement_counts(
    items: Mapping[Hashable, Mapping[AnnotatorT, str]],
) -> dict[AnnotatorT, tuple[int, int]]:
    """Per annotator, (agreed, counted): on how many items their label equals the majority label of
    the OTHER raters of the item, out of how many items counted.

    items: item id -> {annotator: label}. Only items with ≥ 2 ratings count, and an item is skipped
    for an annotator when the other raters' top label is tied. Annotators with no counted item are
    left out of the result.
    """
    agreed: Counter[AnnotatorT] = Counter()
    counted: Counter[AnnotatorT] = Counter()
    for ratings in items.values():
        if len(ratings) < 2:
            continue
        for annotator, label in ratings.items():
            others = Counter(other for who, other in ratings.items() if who != annotator)
            top = others.most_common(2)
            if len(top) == 2 and top[0][1] == top[1][1]:
                continue
            counted[annotator] += 1
            agreed[annotator] += label == top[0][0]
    return {annotator: (agreed[annotator], n) for annotator, n in counted.items()}


def majority_agreement(items: Mapping[Hashable, Mapping[AnnotatorT, str]]) -> dict[AnnotatorT, float]:
    """Each annotator's rate of agreeing with the majority label of the OTHER raters of an item
    (`majority_agreement_counts` as a share)."""
    return {annotator: agreed / n for annotator, (agreed, n) in majority_agreement_counts(items).items()}


def control_accuracy_counts(judgments: Iterable[tuple[AnnotatorT, str, str]]) -> dict[AnnotatorT, tuple[int, int]]:
    """Per annotator, (correct, judged) on control pairs, from `(annotator, choice, expected)` triples.

    A judgment is correct when its choice equals the expected one exactly (a, b, tie or both_bad).
    """
    correct: Counter[AnnotatorT] = Counter()
    judged: Counter[AnnotatorT] = Counter()
    for annotator, choice, expected in judgments:
        judged[annotator] += 1
        correct[annotator] += choice == expected
    return {annotator: (correct[annotator], n) for annotator, n in judged.items()}


def wilson_interval(successes: int, n: int, z: float = Z_95) -> tuple[float, float] | None:
    """Wilson score interval for a binomial proportion successes / n (95% by default); None for n = 0.

    Unlike the normal approximation it stays inside [0, 1] and is not empty at 0/n or n/n:
    8 of 10 gives (0.490, 0.943), 0 of 5 gives (0.0, 0.434).
    """
    if not 0 <= successes <= n:
        raise ValueError(f"successes must be between 0 and n ({n}), got {successes}")
    if n == 0:
        return None
    p = successes / n
    z2 = z * z
    denominator = 1.0 + z2 / n
    centre = (p + z2 / (2 * n)) / denominator
    half = z * math.sqrt(p * (1.0 - p) / n + z2 / (4 * n * n)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def annotator_quality(
    control: Mapping[AnnotatorT, tuple[int, int]], majority: Mapping[AnnotatorT, tuple[int, int]],
    annotators: Iterable[AnnotatorT] = (),
) -> dict[AnnotatorT, dict[str, Any]]:
    """One record per annotator (those in `annotators`, `control` or `majority`) with
    control_judgments, control_accuracy, control_ci ([lo, hi], 95% Wilson), majority_items,
    majority_agreement and majority_ci; the rates and intervals are None where the count is 0.

    control: from `control_accuracy_counts`; majority: from `majority_agreement_counts`.
    """
    names = set(annotators) | set(control) | set(majority)
    out: dict[AnnotatorT, dict[str, Any]] = {}
    for name in sorted(names, key=str):
        right, n_control = control.get(name, (0, 0))
        agreed, n_majority = majority.get(name, (0, 0))
        control_ci, majority_ci = wilson_interval(right, n_control), wilson_interval(agreed, n_majority)
        out[name] = {
            "control_judgments": n_control,
            "control_accuracy": right / n_control if n_control else None,
            "control_ci": list(control_ci) if control_ci else None,
            "majority_items": n_majority,
            "majority_agreement": agreed / n_majority if n_majority else None,
            "majority_ci": list(majority_ci) if majority_ci else None,
        }
    return out


def below_accuracy(control: Mapping[AnnotatorT, tuple[int, int]], threshold: float) -> set[AnnotatorT]:
    """Annotators whose control accuracy (correct / judged) is below `threshold`; those with no
    control judgment are never in it, and a threshold of 0 leaves everyone out of it."""
    return {name for name, (right, n) in control.items() if n > 0 and right / n < threshold}


def tie_rate(labels: Sequence[str], tie_label: str = "tie") -> float | None:
    """Share of judgments equal to tie_label; None for no judgments."""
    if not labels:
        return None
    return sum(label == tie_label for label in labels) / len(labels)


def cohens_kappa_interval(a: Sequence[str], b: Sequence[str], z: float = Z_95
                          ) -> tuple[float, float, float] | None:
    """Cohen's kappa between two raters with a 95% interval from its large-sample standard error
    (Cohen 1960): se = sqrt(p_o (1 - p_o) / (n (1 - p_e)^2)), the interval kappa ± z·se clipped to [-1, 1].

    Returns (kappa, lo, hi), None for no items; (1, 1, 1) when both raters used one and the same label.
    Four items, a = (x, x, y, y) and b = (x, y, y, y): p_o = 0.75, p_e = 0.5, kappa 0.5, se 0.433.
    """
    kappa = cohens_kappa(a, b)
    if kappa is None:
        return None
    n = len(a)
    observed = sum(x == y for x, y in zip(a, b, strict=True)) / n
    counts_a, counts_b = Counter(a), Counter(b)
    expected = sum(counts_a[c] * counts_b[c] for c in counts_a) / (n * n)
    if expected >= 1.0 - 1e-12:
        return 1.0, 1.0, 1.0
    se = math.sqrt(observed * (1.0 - observed) / n) / (1.0 - expected)
    return kappa, max(-1.0, kappa - z * se), min(1.0, kappa + z * se)
