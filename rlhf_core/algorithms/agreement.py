"""Annotation-quality metrics for the operator page: inter-rater agreement, position bias, ties.

Plain Python on lists and dicts (no numpy, no torch). Functions return None when there is not
enough data to say anything, rather than a misleading 0.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Mapping, Sequence
from typing import TypeVar

AnnotatorT = TypeVar("AnnotatorT", bound=Hashable)


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


def majority_agreement(items: Mapping[Hashable, Mapping[AnnotatorT, str]]) -> dict[AnnotatorT, float]:
    """Each annotator's rate of agreeing with the majority label of the OTHER raters of an item.

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
    return {annotator: agreed[annotator] / n for annotator, n in counted.items()}


def tie_rate(labels: Sequence[str], tie_label: str = "tie") -> float | None:
    """Share of judgments equal to tie_label; None for no judgments."""
    if not labels:
        return None
    return sum(label == tie_label for label in labels) / len(labels)
