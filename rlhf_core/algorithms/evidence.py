"""Evidence that the loop improves, as numbers: a conservative reward from an ensemble's members (Coste et al.
2023), cross-fitted accuracy of a linear Bradley-Terry probe (every judgment predicted by a fit that never saw
it), proxy gains as effect sizes, and the over-optimization rule and the "worse than its predecessor" rule that
read a version's evidence. Pure: tensors and plain values in and out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from rlhf_core.algorithms.agreement import wilson_interval
from rlhf_core.algorithms.preference import fit_linear_bt

CONSERVATIVE_MODES = ("mean", "uwo", "wco")


def conservative_reward(members: Tensor, mode: str = "mean", lam: float = 1.0) -> Tensor:
    """One reward per response from the ensemble's member scores `members` [B, K]: their mean ("mean"), the
    mean minus `lam` times their population standard deviation ("uwo", uncertainty-weighted optimization), or
    their minimum ("wco", worst-case optimization). Members (1, 3): mean 2, UWO(λ=0.5) 1.5, WCO 1."""
    if members.dim() != 2:
        raise ValueError(f"members must be [B, K], got shape {tuple(members.shape)}")
    if mode == "mean":
        return members.mean(dim=1)
    if mode == "uwo":
        return members.mean(dim=1) - lam * members.std(dim=1, unbiased=False)
    if mode == "wco":
        return members.min(dim=1).values
    raise ValueError(f"unknown conservative mode {mode!r}; expected one of {', '.join(CONSERVATIVE_MODES)}")


def fold_of(groups: Sequence[int], k: int, seed: int = 0) -> Tensor:
    """A fold in [0, k) for each item, the same for every item of a group (a prompt): groups are shuffled with
    `seed` and dealt round-robin, so folds differ in size by at most one group."""
    import random

    order = sorted(set(groups))
    random.Random(seed).shuffle(order)
    fold = {g: i % k for i, g in enumerate(order)}
    return torch.tensor([fold[g] for g in groups], dtype=torch.long)


def cross_fitted_margins(diff: Tensor, folds: Tensor, l2: float = 1e-2) -> Tensor:
    """Out-of-fold margins [N] of a linear Bradley-Terry probe: for each fold, θ is fitted (`fit_linear_bt`) on
    the other folds' feature differences `diff` [N, F] (chosen − rejected, as the judgments say) and scores this
    fold's; a margin above 0 predicts the judgment. A fold with nothing to fit on gets margin 0."""
    x = diff.detach().double()
    margins = torch.zeros(len(x), dtype=torch.float64)
    for fold in folds.unique().tolist():
        held = folds == fold
        if held.all():
            continue
        theta = fit_linear_bt(x[~held], None, l2)
        margins[held] = x[held] @ theta
    return margins


@dataclass(frozen=True)
class Accuracy:
    """Right of n decisive judgments (ties counting half, or weighted counts: floats), with the 95% Wilson
    interval."""

    right: float
    n: float

    @property
    def value(self) -> float | None:
        return self.right / self.n if self.n else None

    @property
    def interval(self) -> tuple[float, float] | None:
        return wilson_interval(self.right, self.n)

    def __add__(self, other: Accuracy) -> Accuracy:
        return Accuracy(self.right + other.right, self.n + other.n)


def accuracy_of(margins: Tensor) -> Accuracy:
    """Decisive judgments predicted (margin > 0) of those in `margins` [N]; a margin of exactly 0 counts wrong."""
    return Accuracy(int((margins > 0).sum()), len(margins))


def effect_size(policy_scores: Sequence[float], base_scores: Sequence[float]) -> float | None:
    """How far the policy's mean score is above the base's, in units of the base scores' standard deviation:
    reward models differ in scale, so gains are compared across models in these units. None without scores."""
    if not policy_scores or not base_scores:
        return None
    base = torch.tensor(base_scores, dtype=torch.float64)
    spread = float(base.std(unbiased=False)) if len(base) > 1 else 0.0
    gain = sum(policy_scores) / len(policy_scores) - float(base.mean())
    return gain / spread if spread > 1e-9 else 0.0


@dataclass(frozen=True)
class VersionEvidence:
    """What the loop knows of one policy version v: the proxy gain over the base on probe prompts as the reward
    model that trained v claimed it and as the next reward model re-scored it (effect sizes); the reward model's
    accuracy on fresh judgments of v's own pairs (which it never saw); the human win rate against its
    predecessor (evaluation batches); and its KL to the base (nats/token)."""

    version: int
    claimed_gain: float | None = None
    rescored_gain: float | None = None
    rescored_predecessor_gain: float | None = None  # the predecessor's, by the same next reward model
    fresh: Accuracy | None = None
    human_vs_previous: Accuracy | None = None  # wins (ties half) of n judgments
    kl_to_base: float | None = None


MIN_FRESH = 20  # fresh decisive judgments before fresh accuracy speaks
MIN_HUMAN = 20  # judgments of v against its predecessor before the human win rate speaks


@dataclass(frozen=True)
class Alarm:
    version: int
    reason: str


def overoptimization_alarm(history: Sequence[VersionEvidence]) -> Alarm | None:
    """The over-optimization rule, on the newest version v of `history` (versions in order, the first the base or
    the first trained one): the proxy went up (v's claimed gain above its predecessor's, the base counting 0)
    while the evidence that does not come from that proxy says otherwise:
    - fresh: the reward model is no better than chance on v's own new pairs (its fresh accuracy ≤ 50%, over at
      least MIN_FRESH decisive judgments): the policy moved where the proxy is wrong. The point estimate, not the
      interval's lower bound: a few dozen judgments leave any accuracy's lower bound near 50%, and a rule that fired
      on "not yet shown above chance" raised alarms while the gold still rose (bench/overoptimization.py);
    - human: people prefer v to its predecessor no more than half the time (at least MIN_HUMAN judgments);
    - unconfirmed: the next reward model re-scores v's gain at most half of what was claimed (or not above 0).
    Returns the alarm with its reason, or None."""
    if not history:
        return None
    v = history[-1]
    before = history[-2].claimed_gain if len(history) > 1 and history[-2].claimed_gain is not None else 0.0
    if v.claimed_gain is None or v.claimed_gain <= before:
        return None
    up = f"v{v.version}: the proxy gain rose ({before:+.2f} -> {v.claimed_gain:+.2f} base std)"
    reasons = []
    if v.fresh is not None and v.fresh.n >= MIN_FRESH and v.fresh.right <= 0.5 * v.fresh.n:
        reasons.append(f"the reward model is right on only {v.fresh.right}/{v.fresh.n} of v{v.version}'s fresh "
                       f"judgments ({v.fresh.right / v.fresh.n:.0%}, not above chance)")
    if v.human_vs_previous is not None and v.human_vs_previous.n >= MIN_HUMAN and v.human_vs_previous.value <= 0.5:
        reasons.append(f"people prefer v{v.version} to its predecessor {v.human_vs_previous.value:.0%} of "
                       f"{v.human_vs_previous.n} times")
    if v.rescored_gain is not None and (v.rescored_gain <= 0 or v.rescored_gain <= 0.5 * v.claimed_gain):
        reasons.append(f"the next reward model re-scores the gain at {v.rescored_gain:+.2f} base std, not the "
                       f"{v.claimed_gain:+.2f} claimed")
    return Alarm(v.version, f"{up} while {'; and '.join(reasons)}") if reasons else None


def worse_than_predecessor(history: Sequence[VersionEvidence]) -> str | None:
    """Why the evidence says the newest version v of `history` is worse than its predecessor (`loop.promote =
    "if_not_worse"`), or None:
    - people prefer the predecessor: the 95% upper bound of v's human win rate against it is below 50%;
    - the next reward model ranks v below its predecessor: it scores v's probe answers more than 0.1 base
      standard deviations below the predecessor's (the base's gain is 0);
    - the over-optimization rule fires on v."""
    if not history:
        return None
    v = history[-1]
    human = v.human_vs_previous
    if human is not None and human.n >= MIN_HUMAN and human.interval[1] < 0.5:
        return (f"people preferred its predecessor: v{v.version} won {human.value:.0%} of {human.n} judgments "
                f"(95% upper bound {human.interval[1]:.0%})")
    floor = v.rescored_predecessor_gain or 0.0
    if v.rescored_gain is not None and v.rescored_gain < floor - 0.1:
        return (f"the next reward model scores v{v.version} {v.rescored_gain:+.2f} base std above the base, below "
                f"its predecessor's {floor:+.2f}")
    alarm = overoptimization_alarm(history)
    return None if alarm is None else f"over-optimization: {alarm.reason}"
