"""CrowdBT's likelihood, its gradient and EM (rlhf_core.algorithms.crowd_bt) against hand-computed numbers,
and recovery of known annotator reliabilities from synthetic judgments."""

from __future__ import annotations

import pytest
import torch

from rlhf_core.algorithms.crowd_bt import (
    FLIP,
    FOLLOW,
    KNOWN_DIFF,
    LEFT,
    ReliabilityPrior,
    bt_weights,
    crowd_bt_diff_gradient,
    crowd_bt_nll,
    crowd_bt_probability,
    fit_crowd_bt_linear,
    fit_reliability,
    follows_preference,
    reliability_m_step,
    responsibilities,
)

D = torch.tensor([1.5], dtype=torch.float64)  # the seeds' σ(2.0 − 0.5) = 0.8176


def t(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


def grad_of_log_p(diff: torch.Tensor, eta: float, left_bias: float, chosen_left: float) -> torch.Tensor:
    diff = diff.clone().requires_grad_(True)
    (-crowd_bt_nll(diff, t(eta), t(left_bias), t(chosen_left))).sum().backward()
    return diff.grad


def test_eta_one_is_bradley_terry():
    # P = σ(1.5) = 0.8176, −log P = 0.2014 nats, ∂log P/∂d = σ(−1.5) = 0.1824.
    assert float(crowd_bt_probability(D, t(1.0), t(0.0), t(0.0))) == pytest.approx(0.8176, abs=1e-4)
    assert float(crowd_bt_nll(D, t(1.0), t(0.0), t(1.0))) == pytest.approx(0.2014, abs=1e-4)
    assert float(crowd_bt_diff_gradient(D, t(1.0), t(0.0), t(0.0))) == pytest.approx(0.1824, abs=1e-4)
    assert float(grad_of_log_p(D, 1.0, 0.0, 0.0)) == pytest.approx(0.1824, abs=1e-4)


def test_eta_half_says_nothing_and_gives_no_gradient():
    diffs = t(-3.0, 0.0, 1.5, 4.0)
    half = torch.full_like(diffs, 0.5)
    assert torch.allclose(crowd_bt_probability(diffs, half, 0 * half, 0 * half), half)
    assert torch.equal(crowd_bt_diff_gradient(diffs, half, 0 * half, 0 * half), torch.zeros_like(diffs))
    diffs.requires_grad_(True)
    crowd_bt_nll(diffs, half, 0 * half, half * 2).sum().backward()
    assert torch.allclose(diffs.grad, torch.zeros_like(diffs))


def test_adversarial_eta_turns_the_gradient_around():
    # η = 0.2: P = 0.2·0.8176 + 0.8·0.1824 = 0.3095; ∂log P/∂d = −0.6·0.8176·0.1824/0.3095 = −0.2892.
    assert float(crowd_bt_probability(D, t(0.2), t(0.0), t(0.0))) == pytest.approx(0.3095, abs=1e-4)
    assert float(crowd_bt_diff_gradient(D, t(0.2), t(0.0), t(0.0))) == pytest.approx(-0.2892, abs=1e-4)
    assert float(grad_of_log_p(D, 0.2, 0.0, 0.0)) == pytest.approx(-0.2892, abs=1e-4)
    # η and 1 − η on the two orientations of one label are the same judgment.
    assert torch.allclose(crowd_bt_nll(D, t(0.2), t(0.1), t(1.0)), crowd_bt_nll(-D, t(0.8), t(0.1), t(1.0)))


def test_left_bias_adds_the_shown_left_side():
    # λ = 0.5, picked side shown left: 0.5·0.8176 + 0.5 = 0.9088; shown right: 0.5·0.8176 = 0.4088.
    assert float(crowd_bt_probability(D, t(1.0), t(0.5), t(1.0))) == pytest.approx(0.9088, abs=1e-4)
    assert float(crowd_bt_probability(D, t(1.0), t(0.5), t(0.0))) == pytest.approx(0.4088, abs=1e-4)
    # The closed-form gradient matches autograd with a bias too: (1 − λ)(2η − 1)σσ'/P.
    for eta, lam, left in [(0.9, 0.3, 1.0), (0.7, 0.3, 0.0), (0.1, 0.05, 1.0)]:
        assert float(grad_of_log_p(D, eta, lam, left)) == pytest.approx(
            float(crowd_bt_diff_gradient(D, t(eta), t(lam), t(left))), rel=1e-9)


def test_bt_weights_match_crowd_bt_at_zero_difference():
    # d = 0: CrowdBT's ∂log P/∂d over Bradley-Terry's 1/2. Right pick: 2η − 1 = 0.6 whatever λ; left pick
    # with λ = 0.5: 0.5·0.6/1.5 = 0.2; η = 0.2: −0.6 (turned around).
    eta, lam, left = t(0.8, 0.8, 0.8, 0.2, 1.0), t(0.0, 0.5, 0.5, 0.0, 0.0), t(1.0, 0.0, 1.0, 0.0, 1.0)
    weights = bt_weights(eta, lam, left)
    assert weights.tolist() == pytest.approx([0.6, 0.6, 0.2, -0.6, 1.0])
    assert torch.allclose(weights, crowd_bt_diff_gradient(torch.zeros(5, dtype=torch.float64), eta, lam, left) / 0.5)
    shares = responsibilities(torch.zeros(5, dtype=torch.float64), eta, lam, left)
    assert torch.allclose(weights, shares[:, FOLLOW] - shares[:, FLIP])


def test_responsibilities_and_m_step_by_hand():
    # d = 0, η = 0.9, λ = 0.1, picked shown left: parts 0.9·0.9·0.5 = 0.405, 0.9·0.1·0.5 = 0.045, 0.1.
    shares = responsibilities(t(0.0), t(0.9), t(0.1), t(1.0))[0]
    assert shares.tolist() == pytest.approx([0.405 / 0.55, 0.045 / 0.55, 0.1 / 0.55])
    # Picked shown right: no share for "picked left".
    assert float(responsibilities(t(0.0), t(0.9), t(0.1), t(0.0))[0, LEFT]) == 0.0
    shares = t(0.8, 0.1, 0.1, 0.5, 0.5, 0.0, 0.2, 0.2, 0.6).reshape(3, 3)
    eta, left = reliability_m_step(shares, torch.tensor([0, 0, 1]), 2, ReliabilityPrior())
    # Annotator 0: followed 1.3, flipped 0.6, left 0.1 of 2 -> η = 10.3/11.9, λ = 0.6/7.
    # Annotator 1: 0.2, 0.2, 0.6 of 1 -> η = 9.2/10.4, λ = 1.1/6.
    assert eta.tolist() == pytest.approx([10.3 / 11.9, 9.2 / 10.4])
    assert left.tolist() == pytest.approx([0.6 / 7, 1.1 / 6])
    # A new annotator (no judgment) gets the prior means: trusted.
    eta, left = reliability_m_step(shares, torch.tensor([0, 0, 0]), 2)
    assert (float(eta[1]), float(left[1])) == pytest.approx((0.9, 0.1))
    assert follows_preference(t(0.9, 0.7), t(0.0, 1.0)).tolist() == pytest.approx([0.9, 0.5])
    assert (FOLLOW, FLIP, LEFT) == (0, 1, 2)


def synthetic_crowd(etas: list[float], lefts: list[float], per_annotator: int, items: int, seed: int):
    """Items with true scores N(0, 2²); each annotator judges `per_annotator` random pairs of items shown in
    random order, following the preference (BT on the true scores) with their η, or clicking left with λ.
    Returns (true score differences picked − other [B], annotator [B], chosen_left [B], one-hot diffs [B, items])."""
    g = torch.Generator().manual_seed(seed)
    scores = 2.0 * torch.randn(items, generator=g, dtype=torch.float64)
    n = per_annotator * len(etas)
    annotator = torch.arange(len(etas)).repeat_interleave(per_annotator)
    left_item = torch.randint(items, (n,), generator=g)
    right_item = (left_item + torch.randint(1, items, (n,), generator=g)) % items  # never the same item
    u = torch.rand(3, n, generator=g, dtype=torch.float64)
    left_better = u[1] < torch.sigmoid(scores[left_item] - scores[right_item])
    follows = u[2] < torch.tensor(etas, dtype=torch.float64)[annotator]
    picked_left = torch.where(u[0] < torch.tensor(lefts, dtype=torch.float64)[annotator], True,
                              left_better == follows)
    win = torch.where(picked_left, left_item, right_item)
    lose = torch.where(picked_left, right_item, left_item)
    onehot = torch.zeros(n, items, dtype=torch.float64)
    onehot[torch.arange(n), win] = 1.0
    onehot[torch.arange(n), lose] = -1.0
    return scores[win] - scores[lose], annotator, picked_left.double(), onehot


ETAS = [0.95, 0.9, 0.8, 0.5, 0.15, 0.9]
LEFTS = [0.0, 0.0, 0.0, 0.0, 0.0, 0.9]


def test_em_with_known_rewards_recovers_eta_and_left_bias_within_0_06():
    """600 judgments each; the tolerance holds over seeds 0-3 (largest misses: η 0.039, λ 0.047)."""
    diffs, annotator, chosen_left, _ = synthetic_crowd(ETAS, LEFTS, per_annotator=600, items=80, seed=0)
    eta, left = fit_reliability(diffs, annotator, chosen_left, len(ETAS))
    assert eta[:5].tolist() == pytest.approx(ETAS[:5], abs=0.06)
    assert left.tolist() == pytest.approx(LEFTS, abs=0.06)
    # The left-clicker is told apart from an honest annotator: most of their labels follow the preference
    # only half of the time.
    follows = follows_preference(eta, left)
    assert float(follows[5]) < 0.6 < float(follows[:3].min())


def test_em_with_a_linear_scorer_recovers_eta_within_0_08():
    """CrowdBT on item scores (one-hot features: a linear scorer is a score per item), rewards unknown; 600
    judgments each, nearly unregularized (a strong L2 shrinks the rewards, and η grows to make up for it).
    The tolerance holds over seeds 0-3 (largest miss 0.058)."""
    _, annotator, chosen_left, onehot = synthetic_crowd(ETAS, LEFTS, per_annotator=600, items=60, seed=1)
    theta, eta, left = fit_crowd_bt_linear(onehot, annotator, chosen_left, len(ETAS), l2=1e-5, iterations=30)
    assert eta[:5].tolist() == pytest.approx(ETAS[:5], abs=0.08)
    assert float(left[5]) == pytest.approx(0.9, abs=0.05) and float(left[:5].max()) < 0.1
    # Adversarial and coin-flip annotators come out below every honest one.
    assert float(follows_preference(eta, left)[3:].max()) < float(follows_preference(eta, left)[:3].min())


def test_control_pairs_count_as_judgments_with_a_known_answer():
    """An annotator seen only on control pairs, every pick shown on the right: 8 of 10 right gives
    η = (8 + 9)/(10 + 10) = 0.85 and λ = 0.5/(10 + 5) (no pick can be a left click)."""
    picked_right = t(*([KNOWN_DIFF] * 8 + [-KNOWN_DIFF] * 2))
    eta, left = fit_reliability(picked_right, torch.zeros(10, dtype=torch.long), torch.zeros(10), 1)
    assert (float(eta[0]), float(left[0])) == pytest.approx((0.85, 0.5 / 15), abs=1e-6)
    # Through the linear fit: an annotator with no feature judgment still gets η from controls alone.
    _, annotator, chosen_left, onehot = synthetic_crowd([0.9], [0.0], per_annotator=100, items=20, seed=2)
    _, eta, _ = fit_crowd_bt_linear(onehot, annotator, chosen_left, 2, known_diff=t(*[-KNOWN_DIFF] * 10),
                                    known_annotator=torch.ones(10, dtype=torch.long), known_left=torch.zeros(10))
    assert float(eta[1]) == pytest.approx(9 / 20, abs=1e-3)
