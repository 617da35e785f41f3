"""The systems leaderboard, arena-style: a Bradley-Terry model over the systems named by judged pairs
(imported systems, and the loop's policy versions "v0", "v1", ...), each system's rating on the Elo scale
Chatbot Arena shows, its win rate against a chosen baseline, 95% intervals by bootstrap over judgments, and
its number of judgments.

Ties count as half a win for each side; both-bad judgments order nothing and are left out (as in reward
training and the policy-vs-base win rate). The strengths are fitted by choix's iterative Luce spectral ranking
(`ilsr_pairwise_dense`) on the win matrix, which takes the half wins as they are; a small pseudo-count
(`REGULARIZATION`) keeps a system that won (or lost) every one of its judgments finite, which happens often
in bootstrap resamples. With no pseudo-count the fit is the maximum-likelihood one: statsmodels' binomial
GLM gives the same strengths (tests/test_leaderboard.py compares them).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from rlhf_core.algorithms.preference import (
    bootstrap_counts,
    elo_ratings,
    expected_win_rate,
    percentile_interval,
    win_matrix,
)
from storage import Database, SystemJudgment, imported_pair_counts, policy_system, prior_counts, system_judgments

REGULARIZATION = 0.01  # choix's alpha: a pseudo-rate between every two systems
BOOTSTRAP_ROUNDS = 200
SCORE_A = {"a": 1.0, "b": 0.0, "tie": 0.5}  # both_bad: left out


class LeaderboardError(ValueError):
    """A leaderboard that cannot be made as asked (e.g. an unknown baseline); the message says what to do."""


@dataclass(frozen=True)
class SystemRating:
    """One system's row: Elo-scale rating and its 95% interval, win rate against the baseline and its interval,
    and the judgments that name it (ties among them)."""

    system: str
    rating: float
    rating_ci: tuple[float, float]
    win_rate_vs_baseline: float
    win_rate_ci: tuple[float, float]
    judgments: int
    ties: int


@dataclass
class Leaderboard:
    """Systems best first. `unrated`: systems never compared, directly or through others, with the baseline's
    group (a rating against it would mean nothing)."""

    baseline: str | None
    systems: list[SystemRating] = field(default_factory=list)
    judgments: int = 0
    both_bad_left_out: int = 0
    bootstrap_rounds: int = BOOTSTRAP_ROUNDS
    unrated: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """The stable JSON form (`rlhf leaderboard --json`, `rlhf status --json` under "leaderboard")."""
        out = asdict(self)
        out["systems"] = [{**row, "rating_ci": list(row["rating_ci"]), "win_rate_ci": list(row["win_rate_ci"])}
                          for row in out["systems"]]
        return out


def fit_strengths(wins: np.ndarray, alpha: float = REGULARIZATION) -> np.ndarray:
    """Bradley-Terry natural-log strengths [S] from an [S, S] win matrix (choix, mean 0)."""
    import choix

    return np.asarray(choix.ilsr_pairwise_dense(np.asarray(wins, dtype=np.float64), alpha=alpha))


def _connected(n: int, a: np.ndarray, b: np.ndarray, start: int) -> set[int]:
    neighbours: dict[int, set[int]] = {i: set() for i in range(n)}
    for i, j in zip(a.tolist(), b.tolist()):
        neighbours[i].add(j)
        neighbours[j].add(i)
    seen, todo = {start}, [start]
    while todo:
        for j in neighbours[todo.pop()] - seen:
            seen.add(j)
            todo.append(j)
    return seen


def default_baseline(counts: Counter) -> str:
    """"v0" (the base model) when it was judged, else the system with the most judgments (then by name)."""
    if policy_system(0) in counts:
        return policy_system(0)
    return min(counts, key=lambda s: (-counts[s], s))


def build_leaderboard(judgments: Sequence[SystemJudgment], *, baseline: str | None = None,
                      rounds: int = BOOTSTRAP_ROUNDS, seed: int = 0, level: float = 0.95) -> Leaderboard:
    """The leaderboard of `judgments` (see the module docstring); `baseline` defaults to `default_baseline`."""
    used = [j for j in judgments if j.choice in SCORE_A]
    counts = Counter(s for j in used for s in (j.system_a, j.system_b))
    if baseline is not None and baseline not in counts:
        known = ", ".join(sorted(counts)) or "none yet"
        raise LeaderboardError(f"baseline {baseline!r} has no judged pair against another system; "
                               f"systems judged: {known}")
    board = Leaderboard(baseline=None, judgments=len(used), both_bad_left_out=len(judgments) - len(used),
                        bootstrap_rounds=rounds)
    if not used:
        return board
    board.baseline = baseline or default_baseline(counts)
    names = sorted(counts)
    index = {name: i for i, name in enumerate(names)}
    a = np.array([index[j.system_a] for j in used])
    b = np.array([index[j.system_b] for j in used])
    score = np.array([SCORE_A[j.choice] for j in used])
    reach = _connected(len(names), a, b, index[board.baseline])
    keep = np.array([i in reach for i in a.tolist()])  # a pair is in the baseline's group with both its ends
    rated = [name for name in names if index[name] in reach]
    board.unrated = [name for name in names if index[name] not in reach]
    local = {index[name]: k for k, name in enumerate(rated)}
    a, b, score = (np.array([local[i] for i in a[keep].tolist()]), np.array([local[i] for i in b[keep].tolist()]),
                   score[keep])
    base = rated.index(board.baseline)
    point = fit_strengths(win_matrix(a, b, score, len(rated)))
    draws = np.stack([fit_strengths(win_matrix(a, b, score, len(rated), counts=c))
                      for c in bootstrap_counts(len(score), rounds, seed)])
    elo, elo_draws = elo_ratings(point, base), elo_ratings(draws, base)
    win, win_draws = expected_win_rate(point, point[base]), expected_win_rate(draws, draws[:, base:base + 1])
    (elo_lo, elo_hi), (win_lo, win_hi) = percentile_interval(elo_draws, level), percentile_interval(win_draws, level)
    ties = Counter(s for j in used if j.choice == "tie" for s in (j.system_a, j.system_b))
    board.systems = sorted(
        (SystemRating(system=name, rating=float(elo[k]), rating_ci=(float(elo_lo[k]), float(elo_hi[k])),
                      win_rate_vs_baseline=float(win[k]), win_rate_ci=(float(win_lo[k]), float(win_hi[k])),
                      judgments=counts[name], ties=ties[name]) for k, name in enumerate(rated)),
        key=lambda row: (-row.rating, row.system))
    return board


def system_leaderboard(db: Database, *, baseline: str | None = None, rounds: int = BOOTSTRAP_ROUNDS,
                       seed: int = 0) -> Leaderboard:
    """The leaderboard of every judged pair in the database whose two responses name their systems."""
    return build_leaderboard(system_judgments(db), baseline=baseline, rounds=rounds, seed=seed)


def format_leaderboard(board: Leaderboard) -> list[str]:
    """Text lines of the leaderboard for `rlhf leaderboard`."""
    if not board.systems:
        return ["No judged pair names two different systems yet: import pairs with system_a/system_b "
                "(`rlhf pairs import`) or judge policy-vs-base pairs (`rlhf eval-batch`)."]
    lines = [f"{'system':<24}{'rating':>8}  {'95% interval':<15}{'win vs ' + board.baseline:>22}  "
             f"{'95% interval':<15}{'judgments':>10}"]
    for r in board.systems:
        lines.append(f"{r.system[:23]:<24}{r.rating:>8.0f}  {f'{r.rating_ci[0]:.0f}-{r.rating_ci[1]:.0f}':<15}"
                     f"{r.win_rate_vs_baseline:>22.1%}  {f'{r.win_rate_ci[0]:.0%}-{r.win_rate_ci[1]:.0%}':<15}"
                     f"{r.judgments:>10}")
    lines.append(f"Bradley-Terry over {board.judgments} judgments (ties count half a win each side; "
                 f"{board.both_bad_left_out} both-bad left out); Elo scale with {board.baseline} at 1000; "
                 f"95% intervals from {board.bootstrap_rounds} bootstrap resamples of the judgments.")
    if board.unrated:
        lines.append(f"Not rated (never compared with {board.baseline}'s group): {', '.join(board.unrated)}")
    return lines


def outside_data_status(db: Database) -> dict[str, Any]:
    """`rlhf status --json`'s keys for data from outside the loop: "leaderboard" (`Leaderboard.as_dict`),
    "imported_pairs" ({source: {"pairs", "open"}}) and "prior_preferences" ({source: judgments}), the prior
    judgments counted apart from the annotators' (they are in no `judgments` count)."""
    return {"leaderboard": system_leaderboard(db).as_dict(), "imported_pairs": imported_pair_counts(db),
            "prior_preferences": prior_counts(db)}
