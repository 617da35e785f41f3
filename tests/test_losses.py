"""Loss math against numbers worked out by hand (and the seeds' worked examples)."""

from __future__ import annotations

import math

import pytest
import torch

from rlhf_core.algorithms import (
    STRENGTH_MARGIN,
    bradley_terry_loss,
    bt_accuracy,
    bt_probability,
    compute_gae,
    entropy_from_logits,
    explained_variance,
    gather_logprobs,
    grpo_advantages,
    grpo_loss,
    kl_k1,
    kl_k2,
    kl_k3,
    margins_from_strength,
    masked_mean,
    masked_var,
    masked_whiten,
    optimal_policy,
    per_token_rewards,
    ppo_policy_loss,
    ppo_value_loss,
    sequence_kl,
)


def t(*rows: object) -> torch.Tensor:
    return torch.tensor(rows if len(rows) > 1 else rows[0], dtype=torch.float64)


def close(actual: torch.Tensor | float, expected: object, tol: float = 1e-4) -> None:
    torch.testing.assert_close(
        torch.as_tensor(actual, dtype=torch.float64),
        torch.as_tensor(expected, dtype=torch.float64),
        atol=tol,
        rtol=0,
    )


# ----------------------------------------------------------------------- Bradley-Terry


def test_bt_probability_seed_example() -> None:
    close(bt_probability(t([2.0]), t([0.5])), [0.8176])


def test_bradley_terry_loss_with_and_without_margin() -> None:
    chosen, rejected = t([2.0, 1.0]), t([0.5, 1.0])
    # -log σ(1.5) = 0.201413, -log σ(0) = ln 2 = 0.693147
    close(bradley_terry_loss(chosen, rejected), (0.201413 + 0.693147) / 2)
    # margins (0.5, 1.0): -log σ(1.0) = 0.313262, -log σ(-1.0) = 1.313262
    close(bradley_terry_loss(chosen, rejected, margin=t([0.5, 1.0])), (0.313262 + 1.313262) / 2)


def test_bt_accuracy_counts_ties_as_wrong() -> None:
    close(bt_accuracy(t([1.0, 0.0, 3.0]), t([0.0, 1.0, 3.0])), 1 / 3)


def test_margins_from_strength() -> None:
    assert STRENGTH_MARGIN["slight"] < STRENGTH_MARGIN["clear"] < STRENGTH_MARGIN["strong"]
    close(margins_from_strength(["slight", "clear", "strong", None]), [0.0, 0.5, 1.0, 0.0])
    with pytest.raises(ValueError, match="'huge'"):
        margins_from_strength(["clear", "huge"])


def test_bradley_terry_loss_backward_raises_chosen_lowers_rejected() -> None:
    chosen = torch.tensor([0.3, -0.2], requires_grad=True)
    rejected = torch.tensor([0.1, 0.4], requires_grad=True)
    bradley_terry_loss(chosen, rejected, margin=torch.tensor([0.0, 0.5])).backward()
    assert (chosen.grad < 0).all() and (rejected.grad > 0).all()


# ----------------------------------------------------------------------- optimal policy


def test_optimal_policy_seed_example() -> None:
    close(optimal_policy(t([0.6, 0.4]), t([1.0, 0.0]), beta=0.5), [0.9173, 0.0827])


def test_optimal_policy_limits() -> None:
    ref, reward = t([0.6, 0.4]), t([1.0, 0.0])
    close(optimal_policy(ref, reward, beta=0.0), [1.0, 0.0], tol=0)
    close(optimal_policy(ref, reward, beta=math.inf), [0.6, 0.4], tol=1e-12)
    tiny = optimal_policy(ref, reward, beta=1e-3)  # exp(1000) would overflow outside log space
    assert torch.isfinite(tiny).all()
    close(tiny, [1.0, 0.0], tol=1e-12)
    close(optimal_policy(ref, reward, beta=1e6), [0.6, 0.4], tol=1e-5)


def test_optimal_policy_beta_zero_splits_ties_by_reference_mass() -> None:
    close(optimal_policy(t([0.2, 0.6, 0.2]), t([1.0, 1.0, 0.0]), beta=0.0), [0.25, 0.75, 0.0], tol=1e-12)


def test_optimal_policy_batched_and_rejects_negative_beta() -> None:
    out = optimal_policy(t([0.6, 0.4], [0.5, 0.5]), t([1.0, 0.0], [0.0, 0.0]), beta=0.5)
    close(out, [[0.9173, 0.0827], [0.5, 0.5]])
    with pytest.raises(ValueError):
        optimal_policy(t([0.6, 0.4]), t([1.0, 0.0]), beta=-1.0)


# ----------------------------------------------------------------------- KL estimators


def test_kl_estimators_hand_values() -> None:
    logp, ref = t([[math.log(0.5), math.log(0.25), -1.3]]), t([[math.log(0.25), math.log(0.5), -1.3]])
    close(kl_k1(logp, ref), [[0.693147, -0.693147, 0.0]])
    close(kl_k2(logp, ref), [[0.240227, 0.240227, 0.0]])
    # k3 = r - log r - 1 with r = π_ref / π: r = 0.5 -> 0.193147, r = 2 -> 0.306853
    k3 = kl_k3(logp, ref)
    close(k3, [[0.193147, 0.306853, 0.0]])
    assert (k3 >= 0).all() and k3[0, 2] == 0


def test_k1_and_k3_are_unbiased_for_the_true_kl() -> None:
    pi, ref = t([0.7, 0.2, 0.1]), t([0.3, 0.3, 0.4])
    true_kl = (pi * (pi / ref).log()).sum()
    close((pi * kl_k1(pi.log(), ref.log())).sum(), true_kl, tol=1e-12)
    close((pi * kl_k3(pi.log(), ref.log())).sum(), true_kl, tol=1e-12)
    assert not torch.allclose((pi * kl_k2(pi.log(), ref.log())).sum(), true_kl)


# ----------------------------------------------------------------------- masked statistics

X = t([1.0, 2.0, 100.0], [4.0, 50.0, 60.0])
MASK = t([1.0, 1.0, 0.0], [1.0, 0.0, 0.0])


def test_masked_mean_and_var_ignore_padding() -> None:
    close(masked_mean(X, MASK), 7 / 3, tol=1e-12)
    close(masked_mean(X, MASK, dim=1), [1.5, 4.0], tol=1e-12)
    close(masked_var(X, MASK), 42 / 9 / 2, tol=1e-12)
    close(masked_var(X, MASK, unbiased=False), 42 / 9 / 3, tol=1e-12)
    with pytest.raises(ValueError):
        masked_var(X, torch.zeros_like(MASK))


def test_masked_whiten_ignores_masked_positions() -> None:
    whitened = masked_whiten(X, MASK)
    std = math.sqrt(7 / 3)
    close(whitened, [[(1 - 7 / 3) / std, (2 - 7 / 3) / std, 0.0], [(4 - 7 / 3) / std, 0.0, 0.0]])
    noisy = X.clone()
    noisy[MASK == 0] = torch.tensor([-1e6, 3e5, 7.0], dtype=torch.float64)
    close(masked_whiten(noisy, MASK), whitened, tol=1e-12)
    unshifted = masked_whiten(X, MASK, shift_mean=False)
    close(unshifted[MASK.bool()], whitened[MASK.bool()] + 7 / 3, tol=1e-6)


# ----------------------------------------------------------------------- GAE and rewards


def test_compute_gae_hand_example_with_right_padding() -> None:
    rewards = t([1.0, 0.0, 2.0], [0.0, 1.0, 99.0])
    values = t([0.5, 1.0, 1.5], [2.0, 0.5, 99.0])
    mask = t([1.0, 1.0, 1.0], [1.0, 1.0, 0.0])
    adv, ret = compute_gae(rewards, values, mask, gamma=0.9, lam=0.8)
    # Row 0: δ = (1.4, 0.35, 0.5); A2 = 0.5, A1 = 0.35 + 0.72·0.5 = 0.71, A0 = 1.4 + 0.72·0.71
    # Row 1 ends at t=1 (bootstrap 0): δ1 = 0.5, δ0 = 0.9·0.5 − 2 = −1.55, A0 = −1.55 + 0.72·0.5
    close(adv, [[1.9112, 0.71, 0.5], [-1.19, 0.5, 0.0]], tol=1e-9)
    close(ret, [[2.4112, 1.71, 2.0], [0.81, 1.0, 0.0]], tol=1e-9)


def test_compute_gae_gamma_lambda_one_is_reward_to_go_minus_value() -> None:
    rewards, values, mask = t([[0.0, 0.0, 1.0]]), t([[0.2, 0.4, 0.6]]), t([[1.0, 1.0, 1.0]])
    adv, ret = compute_gae(rewards, values, mask, gamma=1.0, lam=1.0)
    close(adv, [[0.8, 0.6, 0.4]], tol=1e-12)
    close(ret, [[1.0, 1.0, 1.0]], tol=1e-12)


def test_per_token_rewards_puts_score_on_last_real_token() -> None:
    ref = t([0.0, 0.0, 0.0], [0.0, 0.0, 0.0])
    logp = t([0.2, -0.1, 7.0], [0.0, 0.5, 1.0])
    mask = t([1.0, 1.0, 0.0], [1.0, 1.0, 1.0])
    out = per_token_rewards(t([3.0, 5.0]), logp, ref, mask, beta=0.1)
    close(out, [[-0.02, 0.01 + 3.0, 0.0], [0.0, -0.05, -0.1 + 5.0]], tol=1e-12)


def test_sequence_kl_sums_k1_over_real_tokens() -> None:
    logp = t([0.2, -0.1, 7.0], [0.0, 0.5, 1.0])
    close(
        sequence_kl(logp, torch.zeros_like(logp), t([1.0, 1.0, 0.0], [1.0, 1.0, 1.0])), [0.1, 1.5], tol=1e-12
    )


# ----------------------------------------------------------------------- PPO


def test_ppo_policy_loss_clips_ratio_above_one_plus_eps() -> None:
    old = torch.zeros(1, 3, dtype=torch.float64)
    logp = torch.tensor([[math.log(1.5), 0.0, 5.0]], dtype=torch.float64, requires_grad=True)
    adv, mask = t([[1.0, 1.0, 1.0]]), t([[1.0, 1.0, 0.0]])
    loss, clip_fraction, approx_kl = ppo_policy_loss(logp, old, adv, mask, clip_eps=0.2)
    close(loss, -(1.2 + 1.0) / 2, tol=1e-12)  # ratio 1.5 counts as 1.2; the padded token is ignored
    close(clip_fraction, 0.5, tol=1e-12)
    close(approx_kl, (0.5 - math.log(1.5)) / 2, tol=1e-12)
    loss.backward()
    # The clipped token gets no gradient; the unclipped one gets −A·ratio / n_tokens.
    close(logp.grad, [[0.0, -0.5, 0.0]], tol=1e-12)


def test_ppo_policy_loss_is_pessimistic_for_negative_advantage() -> None:
    logp = torch.tensor([[math.log(1.5)]], dtype=torch.float64, requires_grad=True)
    loss, _, _ = ppo_policy_loss(logp, torch.zeros(1, 1, dtype=torch.float64), t([[-1.0]]), t([[1.0]]))
    close(loss, 1.5, tol=1e-12)  # max(1.5, 1.2): the bad action still pays the full ratio
    loss.backward()
    close(logp.grad, [[1.5]], tol=1e-12)


def test_ppo_value_loss_hand_example() -> None:
    values = torch.tensor([[1.0, 2.0, 9.0]], dtype=torch.float64, requires_grad=True)
    old, returns, mask = t([[0.5, 2.0, 0.0]]), t([[2.0, 3.0, 0.0]]), t([[1.0, 1.0, 0.0]])
    loss, clip_fraction = ppo_value_loss(values, old, returns, mask, clip_range=0.2)
    # token 0: (1−2)² = 1 vs clipped (0.7−2)² = 1.69 -> 1.69; token 1: 1 either way
    close(loss, 0.5 * (1.69 + 1.0) / 2, tol=1e-12)
    close(clip_fraction, 0.5, tol=1e-12)
    loss.backward()
    assert values.grad[0, 0] == 0 and values.grad[0, 1] != 0 and values.grad[0, 2] == 0


def test_explained_variance() -> None:
    returns, mask = t([[1.0, 2.0, 3.0, 4.0, 0.0]]), t([[1.0, 1.0, 1.0, 1.0, 0.0]])
    assert explained_variance(returns, returns, mask) == pytest.approx(1.0)
    # residual (0, 0, 0, −1): var 0.1875; var(R) = 1.25
    assert explained_variance(t([[1.0, 2.0, 3.0, 5.0, 42.0]]), returns, mask) == pytest.approx(0.85)
    assert math.isnan(explained_variance(returns, t([[2.0, 2.0, 2.0, 2.0, 0.0]]), mask))


# ----------------------------------------------------------------------- GRPO


def test_grpo_advantages_seed_example_uses_population_std() -> None:
    close(grpo_advantages(t([1.0, 0.0, 1.0, 0.0]), group_size=4), [1.0, -1.0, 1.0, -1.0])


def test_grpo_advantages_equal_group_gives_zeros_not_nan() -> None:
    adv = grpo_advantages(t([3.0, 1.0, 5.0, 5.0]), group_size=2)
    assert torch.isfinite(adv).all()
    close(adv, [1.0, -1.0, 0.0, 0.0])
    with pytest.raises(ValueError, match="groups of 3"):
        grpo_advantages(t([1.0, 2.0, 3.0, 4.0]), group_size=3)


def test_grpo_loss_averages_per_sequence_then_over_batch() -> None:
    old = torch.zeros(2, 2, dtype=torch.float64)
    logp = torch.zeros(2, 2, dtype=torch.float64, requires_grad=True)
    ref = t([math.log(2.0), 0.0], [0.0, 0.0])  # k3 = 2 − ln 2 − 1 on row 0, token 0
    mask = t([1.0, 0.0], [1.0, 1.0])
    loss, metrics = grpo_loss(logp, old, ref, t([2.0, -1.0]), mask, clip_eps=0.2, beta=0.5)
    k3 = 1.0 - math.log(2.0)
    # row 0 (one token): −2 + 0.5·k3; row 1 (two tokens): +1 each -> 1; batch mean of the two rows
    close(loss, ((-2.0 + 0.5 * k3) + 1.0) / 2, tol=1e-12)
    close(metrics["kl"], k3 / 3, tol=1e-12)
    close(metrics["clip_fraction"], 0.0, tol=0)
    loss.backward()
    assert torch.isfinite(logp.grad).all() and logp.grad[0, 0] != 0 and logp.grad[0, 1] == 0


def test_grpo_loss_clips_like_ppo() -> None:
    logp = torch.tensor([[math.log(1.5), 0.0]], dtype=torch.float64, requires_grad=True)
    zeros = torch.zeros(1, 2, dtype=torch.float64)
    loss, metrics = grpo_loss(logp, zeros, logp.detach(), t([1.0]), t([[1.0, 1.0]]), beta=0.04)
    close(loss, -(1.2 + 1.0) / 2, tol=1e-12)
    close(metrics["clip_fraction"], 0.5, tol=1e-12)
    assert not metrics["kl"].requires_grad


# ----------------------------------------------------------------------- entropy and log-probs


def test_entropy_from_logits() -> None:
    logits = torch.zeros(1, 2, 4)
    logits[0, 1] = torch.tensor([1000.0, 0.0, 0.0, 0.0])  # softmax would overflow without logsumexp
    close(entropy_from_logits(logits), [[math.log(4), 0.0]], tol=1e-5)
    rand = torch.randn(2, 3, 7, dtype=torch.float64)
    direct = -(rand.softmax(-1) * rand.log_softmax(-1)).sum(-1)
    close(entropy_from_logits(rand), direct, tol=1e-12)


def test_gather_logprobs() -> None:
    logits = torch.tensor([[[0.0, math.log(3.0)], [5.0, 5.0]]], dtype=torch.float64)
    close(gather_logprobs(logits, torch.tensor([[1, 0]])), [[math.log(0.75), math.log(0.5)]], tol=1e-12)
    rand = torch.randn(2, 3, 11)
    tokens = torch.randint(0, 11, (2, 3))
    expected = rand.log_softmax(-1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
    close(gather_logprobs(rand, tokens), expected, tol=1e-5)
    half = gather_logprobs(rand.to(torch.bfloat16), tokens)
    assert half.dtype == torch.float32
    close(half, expected, tol=0.1)

