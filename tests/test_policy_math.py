"""The math of issue 12 against numbers worked out by hand: the DPO loss (with label smoothing), the
adaptive KL controller, Dr. GRPO's advantages and token normalisation, the exact KL of two
distributions, and the reward-length correlation."""

from __future__ import annotations

import math

import pytest
import torch

from rlhf_core.algorithms import (
    adaptive_kl_beta,
    dpo_loss,
    grpo_advantages,
    grpo_loss,
    kl_from_logits,
    pearson_correlation,
    sequence_logprobs,
)


def t(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


# ----------------------------------------------------------------------------------------------- DPO


@pytest.mark.parametrize("smoothing", [0.0, 0.1, 0.3])
def test_dpo_loss_is_log2_when_policy_equals_reference_and_gradient_favours_chosen(smoothing: float) -> None:
    chosen = torch.tensor([-12.0, -3.5], dtype=torch.float64, requires_grad=True)
    rejected = torch.tensor([-9.0, -7.25], dtype=torch.float64, requires_grad=True)
    loss, metrics = dpo_loss(chosen, rejected, chosen.detach().clone(), rejected.detach().clone(), beta=0.1,
                             label_smoothing=smoothing)
    assert loss.item() == pytest.approx(math.log(2), abs=1e-12)
    assert metrics["reward_margin"].item() == 0.0 and metrics["reward_accuracy"].item() == 0.0  # ties are not wins
    loss.backward()
    # dL/dlogπ(y_w) = −β(1 − 2ε)/2 per pair, averaged over the 2 pairs: descent raises the chosen log-prob.
    expected = -0.1 * (1 - 2 * smoothing) / 2 / 2
    torch.testing.assert_close(chosen.grad, t(expected, expected))
    torch.testing.assert_close(rejected.grad, t(-expected, -expected))
    assert (chosen.grad < 0).all() and (rejected.grad > 0).all()


def test_dpo_loss_hand_computed_example() -> None:
    # log-ratios: chosen −10 − (−12) = 2, rejected −15 − (−14) = −1; h = 3, β·h = 0.3.
    policy_c, policy_r, ref_c, ref_r = t(-10.0), t(-15.0), t(-12.0), t(-14.0)
    loss, metrics = dpo_loss(policy_c, policy_r, ref_c, ref_r, beta=0.1)
    assert loss.item() == pytest.approx(0.554355, abs=1e-6)  # −log σ(0.3) = log(1 + e^−0.3)
    assert metrics["chosen_reward"].item() == pytest.approx(0.2)
    assert metrics["rejected_reward"].item() == pytest.approx(-0.1)
    assert metrics["reward_margin"].item() == pytest.approx(0.3)
    assert metrics["reward_accuracy"].item() == 1.0
    # Conservative DPO with ε = 0.1: 0.9·(−log σ(0.3)) + 0.1·(−log σ(−0.3)) = 0.9·0.554355 + 0.1·0.854355.
    smoothed, _ = dpo_loss(policy_c, policy_r, ref_c, ref_r, beta=0.1, label_smoothing=0.1)
    assert smoothed.item() == pytest.approx(0.584355, abs=1e-6)


def test_dpo_loss_refuses_bad_settings() -> None:
    with pytest.raises(ValueError, match="beta"):
        dpo_loss(t(0.0), t(0.0), t(0.0), t(0.0), beta=0.0)
    with pytest.raises(ValueError, match="label_smoothing"):
        dpo_loss(t(0.0), t(0.0), t(0.0), t(0.0), beta=0.1, label_smoothing=0.5)


def test_sequence_logprobs_sums_the_response_tokens_only() -> None:
    logp = torch.tensor([[-1.0, -2.0, float("nan")], [-0.5, -0.25, -0.125]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [0.0, 1.0, 1.0]])
    torch.testing.assert_close(sequence_logprobs(logp, mask), torch.tensor([-3.0, -0.375]))


# ---------------------------------------------------------------------------------------- adaptive KL


def test_adaptive_kl_moves_beta_towards_the_target_on_a_scripted_sequence() -> None:
    # target 0.05, 32 samples per step, horizon 320: each step moves β by at most ±0.2·32/320 = ±2%.
    beta, betas = 0.1, []
    for kl in (0.2, 0.2, 0.05, 0.0, 0.0, 0.0525):
        beta = adaptive_kl_beta(beta, kl, target=0.05, n_samples=32, horizon=320)
        betas.append(beta)
    # over target (error clipped at +0.2) twice, on target, under target (−1 clipped to −0.2) twice, 5% over.
    expected = [0.102, 0.10404, 0.10404, 0.1019592, 0.099920016, 0.099920016 * 1.005]
    assert betas == pytest.approx(expected, rel=1e-9)
    assert adaptive_kl_beta(0.1, float("nan"), target=0.05, n_samples=32, horizon=320) == 0.1
    with pytest.raises(ValueError, match="target"):
        adaptive_kl_beta(0.1, 0.1, target=0.0, n_samples=32, horizon=320)


# -------------------------------------------------------------------------------------------- Dr. GRPO


def test_dr_grpo_advantages_only_centre_within_the_group() -> None:
    rewards = t(1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 2.0, 2.0, 2.0, 2.0)
    torch.testing.assert_close(grpo_advantages(rewards, 4, scale_by_std=False),
                               t(0.5, -0.5, 0.5, -0.5, 0.75, -0.25, -0.25, -0.25, 0.0, 0.0, 0.0, 0.0))
    # GRPO divides by each group's population std: (1,0,1,0) -> (1,−1,1,−1) (the seeds' example), and a
    # group with one success among four is scaled by 1/0.4330 (std of (1,0,0,0) is √0.1875).
    scaled = grpo_advantages(rewards, 4)
    torch.testing.assert_close(scaled[:4], t(1.0, -1.0, 1.0, -1.0), atol=1e-5, rtol=0)
    torch.testing.assert_close(scaled[4:8], t(0.75, -0.25, -0.25, -0.25) / math.sqrt(0.1875), atol=1e-5, rtol=0)


def test_dr_grpo_weighs_every_token_the_same_whatever_the_response_length() -> None:
    # Two responses of 2 and 4 tokens (4 columns), advantages (1, −1), π = π_old = π_ref: ratio 1, KL 0.
    mask = torch.tensor([[1.0, 1.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0]], dtype=torch.float64)
    advantages = t(1.0, -1.0)
    losses, grads = {}, {}
    for loss_type in ("grpo", "dr_grpo"):
        logp = torch.zeros(2, 4, dtype=torch.float64, requires_grad=True)
        loss, _ = grpo_loss(logp, torch.zeros(2, 4, dtype=torch.float64), torch.zeros(2, 4, dtype=torch.float64),
                            advantages, mask, loss_type=loss_type, max_tokens=4)
        loss.backward()
        losses[loss_type], grads[loss_type] = loss.item(), logp.grad
    # grpo: mean over each response's tokens, then over responses: (−1 + 1) / 2 = 0;
    # dr_grpo: (−1·2 + 1·4) / (2 responses · 4 max tokens) = 0.25.
    assert losses["grpo"] == pytest.approx(0.0) and losses["dr_grpo"] == pytest.approx(0.25)
    # Per token: grpo −A / (B · length) = −1/4 on the short one, +1/8 on the long one; dr_grpo −A / (B · 4) on both.
    torch.testing.assert_close(grads["grpo"], torch.tensor([[-0.25, -0.25, 0, 0], [0.125] * 4], dtype=torch.float64))
    torch.testing.assert_close(grads["dr_grpo"], torch.tensor([[-0.125, -0.125, 0, 0], [0.125] * 4],
                                                              dtype=torch.float64))
    with pytest.raises(ValueError, match="max_tokens"):
        grpo_loss(logp.detach(), logp.detach(), logp.detach(), advantages, mask, loss_type="dr_grpo")
    with pytest.raises(ValueError, match="loss_type"):
        grpo_loss(logp.detach(), logp.detach(), logp.detach(), advantages, mask, loss_type="dapo")


# ------------------------------------------------------------------------------- KL and correlation


def test_kl_from_logits_by_hand() -> None:
    p, q = torch.log(t(0.5, 0.5)), torch.log(t(0.9, 0.1))
    # 0.5·ln(0.5/0.9) + 0.5·ln(0.5/0.1) = 0.5·(−0.587787) + 0.5·1.609438
    assert kl_from_logits(p, q).item() == pytest.approx(0.510826, abs=1e-6)
    assert kl_from_logits(p + 3.0, q).item() == pytest.approx(0.510826, abs=1e-6)  # logits, not log-probs
    assert kl_from_logits(q, q).item() == pytest.approx(0.0, abs=1e-7)


def test_pearson_correlation_by_hand() -> None:
    # dx = (−1, 0, 1), dy = (−7/3, −1/3, 8/3): Σdxdy = 5, Σdx² = 2, Σdy² = 38/3 -> r = 5 / √(76/3) = 0.99340
    assert pearson_correlation([1, 2, 3], [2, 4, 7]) == pytest.approx(0.993399, abs=1e-6)
    assert pearson_correlation([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert pearson_correlation([1, 2, 3], [5, 5, 5]) is None  # a constant: undefined, not "no bias"
    assert pearson_correlation([1], [2]) is None
    with pytest.raises(ValueError, match="paired"):
        pearson_correlation([1, 2], [1])
