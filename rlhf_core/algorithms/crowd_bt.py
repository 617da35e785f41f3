"""CrowdBT (Chen et al. 2013, "Pairwise ranking aggregation in a crowdsourced setting"): Bradley-Terry
preferences seen through annotators who are not all reliable, with a position bias per annotator.

Per judgment i by annotator j: d_i = r(picked) − r(other), the reward difference of the side the annotator
picked over the side they did not (reward units), and ℓ_i = 1 when the picked side was shown on the left
(sides are randomised per judgment, which is what makes the bias identifiable). Annotator j has

- η_j: the probability that their label follows the true preference when they do not pick by position
  (η = 1 is Bradley-Terry, η = 0.5 says nothing, η < 0.5 is adversarial: the label says the opposite);
- λ_j: the probability that they pick the shown-left side regardless of the responses.

    P(label_i) = (1 − λ_j)·[η_j σ(d_i) + (1 − η_j) σ(−d_i)] + λ_j ℓ_i

EM fits η and λ: the E-step splits each judgment into "followed", "flipped" and "picked left" by their
posterior shares (`responsibilities`); the M-step counts them per annotator under Beta priors that trust a
new annotator (`reliability_m_step`); with a linear scorer the reward's M-step is a weighted Bradley-Terry
fit on both orientations (`fit_crowd_bt_linear`). Judgments with a known answer (control pairs) enter as
d = ±`KNOWN_DIFF`. A neural reward model trains on Bradley-Terry with each judgment weighted by
`bt_weights`: CrowdBT's gradient at d = 0, relative to Bradley-Terry's. Pure functions: tensors in, tensors
out; B judgments, J annotators.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from rlhf_core.algorithms.preference import fit_linear_bt

KNOWN_DIFF = 30.0  # a control pair's d: σ(30) = 1 − 1e-13, the preference is known
FOLLOW, FLIP, LEFT = 0, 1, 2  # columns of `responsibilities`


@dataclass(frozen=True)
class ReliabilityPrior:
    """Beta priors of η (mean 0.9, worth 10 judgments: a new annotator is trusted) and λ (mean 0.1, worth
    5 judgments), as pseudo-counts added to the E-step's expected counts."""

    eta_follow: float = 9.0
    eta_flip: float = 1.0
    left: float = 0.5
    not_left: float = 4.5


def _log_parts(diff: Tensor, eta: Tensor, left_bias: Tensor, chosen_left: Tensor) -> Tensor:
    """[B, 3] log of the three terms of P(label): followed, flipped, picked left (log 0 = −inf)."""
    eta, left_bias, chosen_left = (t.to(diff) for t in (eta, left_bias, chosen_left))
    log_rest = torch.log1p(-left_bias)
    return torch.stack([log_rest + torch.log(eta) + F.logsigmoid(diff),
                        log_rest + torch.log1p(-eta) + F.logsigmoid(-diff),
                        torch.log(left_bias) + torch.log(chosen_left)], dim=-1)


def crowd_bt_probability(diff: Tensor, eta: Tensor, left_bias: Tensor, chosen_left: Tensor) -> Tensor:
    """P(label) per judgment [B] from d [B], η [B], λ [B] and ℓ [B] (see the module docstring)."""
    return _log_parts(diff, eta, left_bias, chosen_left).logsumexp(dim=-1).exp()


def crowd_bt_nll(diff: Tensor, eta: Tensor, left_bias: Tensor, chosen_left: Tensor) -> Tensor:
    """−log P(label) per judgment [B] in nats, computed in log space (stable for large |d|)."""
    return -_log_parts(diff, eta, left_bias, chosen_left).logsumexp(dim=-1)


def crowd_bt_diff_gradient(diff: Tensor, eta: Tensor, left_bias: Tensor, chosen_left: Tensor) -> Tensor:
    """∂ log P(label) / ∂d [B] in closed form: (1 − λ)(2η − 1) σ(d) σ(−d) / P(label).

    With η = 1, λ = 0 this is Bradley-Terry's σ(−d); η = 0.5 gives 0; η < 0.5 turns the sign around."""
    sig = torch.sigmoid(diff)
    eta, left_bias = eta.to(diff), left_bias.to(diff)
    return (1 - left_bias) * (2 * eta - 1) * sig * (1 - sig) / crowd_bt_probability(diff, eta, left_bias, chosen_left)


def responsibilities(diff: Tensor, eta: Tensor, left_bias: Tensor, chosen_left: Tensor) -> Tensor:
    """E-step: the posterior share [B, 3] of each judgment that was followed, flipped, or picked by position
    (columns FOLLOW, FLIP, LEFT; rows sum to 1)."""
    return torch.softmax(_log_parts(diff, eta, left_bias, chosen_left), dim=-1)


def reliability_m_step(shares: Tensor, annotator: Tensor, n_annotators: int,
                       prior: ReliabilityPrior = ReliabilityPrior()) -> tuple[Tensor, Tensor]:
    """M-step: each annotator's η [J] and λ [J] from the E-step's shares [B, 3] of their judgments
    (`annotator` [B] long in [0, J)): posterior means under the Beta priors,
    η = (followed + a) / (followed + flipped + a + b), λ = (left + a') / (n + a' + b')."""
    counts = torch.zeros(n_annotators, 3, dtype=shares.dtype, device=shares.device)
    counts.index_add_(0, annotator.to(shares.device).long(), shares)
    follow, flip, left = counts.unbind(dim=-1)
    eta = (follow + prior.eta_follow) / (follow + flip + prior.eta_follow + prior.eta_flip)
    left_bias = (left + prior.left) / (counts.sum(dim=-1) + prior.left + prior.not_left)
    return eta, left_bias


def fit_reliability(diff: Tensor, annotator: Tensor, chosen_left: Tensor, n_annotators: int,
                    prior: ReliabilityPrior = ReliabilityPrior(), iterations: int = 100, tol: float = 1e-6
                    ) -> tuple[Tensor, Tensor]:
    """η [J] and λ [J] by EM with the reward differences held fixed: d [B] of the picked over the other side
    (a trained reward model's, or ±KNOWN_DIFF for control pairs), `annotator` [B] long in [0, J), ℓ [B].
    Starts at the prior means; stops after `iterations` or when no estimate moves by more than `tol`."""
    diff, chosen_left = diff.detach().double(), chosen_left.detach().double()
    eta = torch.full((n_annotators,), prior.eta_follow / (prior.eta_follow + prior.eta_flip), dtype=torch.float64)
    left_bias = torch.full_like(eta, prior.left / (prior.left + prior.not_left))
    for _ in range(iterations):
        shares = responsibilities(diff, eta[annotator], left_bias[annotator], chosen_left)
        new_eta, new_left = reliability_m_step(shares, annotator, n_annotators, prior)
        moved = max(float((new_eta - eta).abs().max()), float((new_left - left_bias).abs().max()))
        eta, left_bias = new_eta, new_left
        if moved < tol:
            break
    return eta, left_bias


def fit_crowd_bt_linear(features_diff: Tensor, annotator: Tensor, chosen_left: Tensor, n_annotators: int, *,
                        l2: float = 1e-2, prior: ReliabilityPrior = ReliabilityPrior(), iterations: int = 20,
                        known_diff: Tensor | None = None, known_annotator: Tensor | None = None,
                        known_left: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """CrowdBT with a linear scorer r(x) = θ·φ(x), by EM: returns θ [F] (float64), η [J] and λ [J].

    features_diff: [B, F] φ(picked) − φ(other) of B judgments; annotator [B] long; chosen_left [B].
    Each iteration: E-step with d = features_diff·θ; M-step for θ, a Bradley-Terry fit (`fit_linear_bt`, L2
    strength `l2`) on both orientations weighted by the followed and flipped shares; M-step for η and λ.
    `known_*` add judgments whose d is known (control pairs: ±KNOWN_DIFF), which count for η and λ only.
    """
    x = features_diff.detach().double()
    annotator, chosen_left = annotator.long(), chosen_left.detach().double()
    if known_diff is not None:
        all_annotators = torch.cat([annotator, known_annotator.long()])
        all_left = torch.cat([chosen_left, known_left.detach().double()])
    else:
        all_annotators, all_left = annotator, chosen_left
    eta = torch.full((n_annotators,), prior.eta_follow / (prior.eta_follow + prior.eta_flip), dtype=torch.float64)
    left_bias = torch.full_like(eta, prior.left / (prior.left + prior.not_left))
    theta = torch.zeros(x.shape[1], dtype=torch.float64)
    for _ in range(iterations):
        diff = x @ theta
        if known_diff is not None:
            diff = torch.cat([diff, known_diff.detach().double()])
        shares = responsibilities(diff, eta[all_annotators], left_bias[all_annotators], all_left)
        n = len(x)
        theta = fit_linear_bt(torch.cat([x, -x]), torch.cat([shares[:n, FOLLOW], shares[:n, FLIP]]), l2)
        diff = x @ theta
        if known_diff is not None:
            diff = torch.cat([diff, known_diff.detach().double()])
        shares = responsibilities(diff, eta[all_annotators], left_bias[all_annotators], all_left)
        eta, left_bias = reliability_m_step(shares, all_annotators, n_annotators, prior)
    return theta, eta, left_bias


def bt_weights(eta: Tensor, left_bias: Tensor, chosen_left: Tensor) -> Tensor:
    """Signed Bradley-Terry weights [B] that match CrowdBT to first order: ∂log P/∂d at d = 0 divided by
    Bradley-Terry's σ(0) = 1/2, which is (1 − λ)(2η − 1) / (1 − λ + 2λℓ).

    A pick shown on the right counts with 2η − 1 whatever λ (a left-clicker did not make it); a pick shown on
    the left is discounted by the chance that it was a click. Negative: the label says the opposite of the
    preference (train on it turned around, with the absolute weight). Equal to E[followed] − E[flipped] at d = 0.
    """
    eta, left_bias, chosen_left = eta.double(), left_bias.double(), chosen_left.double()
    return (1 - left_bias) * (2 * eta - 1) / (1 - left_bias + 2 * left_bias * chosen_left)


def follows_preference(eta: Tensor, left_bias: Tensor) -> Tensor:
    """The share of an annotator's decisive labels that follow the true preference, sides randomised:
    (1 − λ)·η + λ/2 (a left-clicker's picks agree with the preference half of the time)."""
    return (1 - left_bias) * eta + left_bias / 2
