"""Preference math: Bradley-Terry probabilities and loss, strength margins, and the closed-form
optimum of the KL-regularized objective; and arena-style ratings of systems (Elo scale, bootstrap).

Pure functions: tensors in, tensors out; no models, no IO. B = pairs, K = candidate responses.
Rewards are in reward units; losses in nats.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

# Margin (in reward units) demanded by the Bradley-Terry loss for each annotator strength, as in
# Llama 2's margin loss: a "strong" preference should be separated by more than a "slight" one.
STRENGTH_MARGIN: dict[str | None, float] = {None: 0.0, "slight": 0.0, "clear": 0.5, "strong": 1.0}


def bt_probability(r_chosen: Tensor, r_rejected: Tensor) -> Tensor:
    """P(chosen ≻ rejected) = sigmoid(r_chosen − r_rejected); inputs [B] rewards, output [B] in (0, 1)."""
    return torch.sigmoid(r_chosen - r_rejected)


def bradley_terry_loss(r_chosen: Tensor, r_rejected: Tensor, margin: Tensor | None = None) -> Tensor:
    """Mean negative log-likelihood of the preferences, −log σ(r_c − r_r − margin).

    r_chosen, r_rejected: [B] scalar rewards; margin: [B] or None (zero). Returns a scalar in nats.
    """
    diff = r_chosen - r_rejected
    if margin is not None:
        diff = diff - margin.to(diff)
    return -F.logsigmoid(diff).mean()


def bt_accuracy(r_chosen: Tensor, r_rejected: Tensor) -> Tensor:
    """Fraction of pairs with r_chosen > r_rejected (ties count as wrong); [B], [B] -> scalar in [0, 1]."""
    return (r_chosen > r_rejected).float().mean()


def margins_from_strength(strengths: list[str | None]) -> Tensor:
    """Map annotator strengths ("slight" / "clear" / "strong" / None) to BT margins; returns float32 [B]."""
    unknown = sorted({repr(s) for s in strengths if s not in STRENGTH_MARGIN})
    if unknown:
        known = ", ".join(repr(k) for k in STRENGTH_MARGIN)
        raise ValueError(f"unknown preference strength {', '.join(unknown)}; expected one of {known}")
    return torch.tensor([STRENGTH_MARGIN[s] for s in strengths], dtype=torch.float32)


def optimal_policy(ref_probs: Tensor, rewards: Tensor, beta: float) -> Tensor:
    """Closed-form optimum of E[r] − β·KL(π‖π_ref) over K responses: π* ∝ π_ref · exp(r / β).

    ref_probs, rewards: [..., K] (probabilities, reward units). Returns [..., K] probabilities.
    β = 0 gives the reward argmax (ties split in proportion to reference mass); β = inf gives π_ref.
    """
    if beta < 0 or math.isnan(beta):
        raise ValueError(f"beta must be >= 0, got {beta}")
    ref = ref_probs / ref_probs.sum(dim=-1, keepdim=True)
    if math.isinf(beta):
        return ref
    if beta == 0:
        best = rewards == rewards.max(dim=-1, keepdim=True).values
        weight = torch.where(best, ref, torch.zeros_like(ref))
        mass = weight.sum(dim=-1, keepdim=True)
        # If the reference puts no mass on any best response, split uniformly among them.
        weight = torch.where(mass > 0, weight, best.to(ref.dtype))
        return weight / weight.sum(dim=-1, keepdim=True)
    # Log space: exp(r / β) overflows for small β, softmax of (log π_ref + r / β) does not.
    return torch.softmax(torch.log(ref) + rewards / beta, dim=-1)


# --------------------------------------------------------------------------- ties, ensembles, calibration


def davidson_log_likelihood(r_a: Tensor, r_b: Tensor, outcome: Tensor, log_nu: Tensor) -> Tensor:
    """Log-likelihood of each outcome under Davidson's tie model (1970), per pair: [B] nats.

    With d = r_a − r_b and ν = exp(log_nu) ≥ 0:
    P(a) = e^{d/2} / Z, P(b) = e^{−d/2} / Z, P(tie) = ν / Z, with Z = e^{d/2} + e^{−d/2} + ν.
    ν → 0 gives Bradley-Terry (no ties). outcome: [B] long, 0 = a preferred, 1 = b, 2 = tie.
    """
    half = (r_a - r_b) / 2
    log_nu = log_nu.to(half).expand_as(half)
    log_z = torch.logsumexp(torch.stack([half, -half, log_nu]), dim=0)
    numerators = torch.stack([half, -half, log_nu])  # [3, B]
    return numerators.gather(0, outcome.long().unsqueeze(0)).squeeze(0) - log_z


def weighted_bt_loss(r_chosen: Tensor, r_rejected: Tensor, weights: Tensor, margin: Tensor | None = None,
                     normalizer: Tensor | None = None) -> Tensor:
    """Bradley-Terry loss of an ensemble of K scorers, each with its own example weights.

    r_chosen, r_rejected: [B, K] member scores; weights: [K, B] (e.g. bootstrap counts). Each member's
    loss is its weighted mean of −log σ(r_c − r_r − margin); returns their mean over K (nats).
    `normalizer` [K] replaces the weight sums (data parallel: the whole batch's sums, so the
    processes' losses add up to the one-process loss).
    """
    diff = r_chosen - r_rejected
    if margin is not None:
        diff = diff - margin.to(diff).unsqueeze(-1)
    return weighted_mean_over_members(-F.logsigmoid(diff).T, weights, normalizer)


def weighted_mean_over_members(nll: Tensor, weights: Tensor, normalizer: Tensor | None = None) -> Tensor:
    """mean_k Σ_i w_ki nll_ki / n_k with n_k = Σ_i w_ki unless given: [K, B], [K, B], [K] -> scalar."""
    weights = weights.to(nll)
    total = weights.sum(dim=1) if normalizer is None else normalizer.to(nll)
    return ((nll * weights).sum(dim=1) / total.clamp(min=1e-8)).mean()


def normalized_example_weights(weights: Tensor) -> Tensor:
    """Per-example loss weights [N] (>= 0, e.g. 1 per human judgment and `reward.prior_weight` per prior
    one) divided by their mean, so they average 1: all-equal weights give exactly 1 each (the unweighted
    loss), and a weighted mean over a batch keeps its bootstrap-count normalizer. [N] -> [N] float32."""
    weights = weights.detach().float()
    if weights.numel() and (not torch.isfinite(weights).all() or (weights < 0).any()):
        raise ValueError("example weights must be finite and >= 0")
    mean = weights.mean() if weights.numel() else torch.tensor(1.0)
    if mean <= 0:
        raise ValueError("example weights are all 0: nothing to train on")
    return weights / mean


def bootstrap_weights(n: int, k: int, generator: torch.Generator | None = None) -> Tensor:
    """[K, n] bootstrap counts: member k sees example i Poisson(1) times (the online bootstrap).

    Member 0 sees every example once, so a one-member "ensemble" is plain training.
    """
    weights = torch.poisson(torch.ones(k, n), generator=generator)
    weights[0] = 1.0
    return weights


def preference_probabilities(scores_a: Tensor, scores_b: Tensor) -> Tensor:
    """σ(r_a − r_b) per ensemble member: [..., K] member scores of each side -> [..., K] probabilities."""
    return torch.sigmoid(scores_a - scores_b)


def pair_information(scores_a: Tensor, scores_b: Tensor) -> Tensor:
    """How much a person's judgment of the pair would teach the reward model: [N, K] member scores of
    each side -> [N] in [0, 1], higher = more informative.

    With K ≥ 2 members: the spread (standard deviation) of the members' preference probabilities,
    scaled by its maximum 0.5 (Christiano et al. 2017, 2.2.4: ask where the ensemble disagrees).
    With one member: 1 − |2p − 1|, largest when the predicted preference is closest to 1/2.
    """
    probs = preference_probabilities(scores_a, scores_b)
    if probs.shape[-1] >= 2:
        return probs.std(dim=-1, unbiased=False) / 0.5
    return 1.0 - (2.0 * probs[..., 0] - 1.0).abs()


def expected_calibration_error(probs: Tensor, outcomes: Tensor, n_bins: int = 10) -> float:
    """ECE of predicted probabilities against outcomes (0/1, or the probability of a 1): the mean, over
    equal-width bins of the prediction weighted by their share of examples, of |mean prediction −
    mean outcome|. [N], [N] -> a float in [0, 1]; 0.0 for no examples.
    """
    if probs.numel() == 0:
        return 0.0
    probs, outcomes = probs.detach().double().flatten(), outcomes.detach().double().flatten()
    bins = torch.clamp((probs * n_bins).long(), max=n_bins - 1)
    total = 0.0
    for b in range(n_bins):
        in_bin = bins == b
        if in_bin.any():
            total += float(in_bin.double().mean() * (probs[in_bin].mean() - outcomes[in_bin].mean()).abs())
    return total


def symmetric_calibration_error(r_chosen: Tensor, r_rejected: Tensor, n_bins: int = 10) -> float:
    """ECE of σ(r_c − r_r) on held-out preferences, each counted in both orientations ((p, 1) and
    (1 − p, 0)), so a model cannot look calibrated by always predicting the chosen side."""
    p = torch.sigmoid(r_chosen.detach().double() - r_rejected.detach().double()).flatten()
    return expected_calibration_error(torch.cat([p, 1 - p]), torch.cat([torch.ones_like(p), torch.zeros_like(p)]),
                                      n_bins)


def fit_linear_bt(diff: Tensor, weights: Tensor | None = None, l2: float = 1e-2, max_iter: int = 100) -> Tensor:
    """A linear Bradley-Terry scorer r(x) = θ · φ(x) fitted to feature differences by L-BFGS.

    diff: [N, H] φ(chosen) − φ(rejected) (best standardised per column); weights: [N] example
    weights (None = 1). Minimises Σ w_i softplus(−diff_i · θ) / Σ w_i + l2 |θ|². Returns θ [H]
    (float64). The optimum is unique for l2 > 0, so the fit is deterministic.
    """
    x = diff.detach().double()
    w = torch.ones(x.shape[0], dtype=torch.float64) if weights is None else weights.detach().double().cpu()
    w = w.to(x.device)
    theta = torch.zeros(x.shape[1], dtype=torch.float64, device=x.device, requires_grad=True)
    optimizer = torch.optim.LBFGS([theta], max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        optimizer.zero_grad()
        loss = (F.softplus(-(x @ theta)) * w).sum() / w.sum().clamp(min=1e-12) + l2 * (theta * theta).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return theta.detach()


def fit_temperature(gaps: Tensor, low: float = 0.1, high: float = 10.0, iterations: int = 100) -> float:
    """Temperature scaling of a Bradley-Terry model (Guo et al. 2017): the factor s in [low, high] that
    minimises mean softplus(−s·gap) over held-out decisive pairs, gap = r_chosen − r_rejected [N].

    The loss is convex in s, hence unimodal in log s: a golden-section search on log s finds it. Scores
    multiplied by s keep every ranking (accuracy, pair selection) and make σ(s·gap) calibrated on those
    pairs. Perfectly separated pairs push s to `high`, hence the bounds.
    """
    g = gaps.detach().double().flatten()
    if g.numel() == 0:
        return 1.0

    def loss(log_s: float) -> float:
        return float(F.softplus(-math.exp(log_s) * g).mean())

    a, b = math.log(low), math.log(high)
    ratio = (math.sqrt(5) - 1) / 2
    c, d = b - ratio * (b - a), a + ratio * (b - a)
    fc, fd = loss(c), loss(d)
    for _ in range(iterations):
        if fc <= fd:
            b, d, fd = d, c, fc
            c = b - ratio * (b - a)
            fc = loss(c)
        else:
            a, c, fc = c, d, fd
            d = a + ratio * (b - a)
            fd = loss(d)
    return math.exp((a + b) / 2)


# --------------------------------------------------------------------------- systems: arena-style ratings
# As Chatbot Arena shows them: the win matrix of judgments between systems (ties half a win each side),
# Bradley-Terry strengths on the Elo scale, expected win rates, bootstrap over judgments. numpy arrays in and
# out (the strengths are fitted by choix in `rlhf_core.data.leaderboard`); S = systems, N = judgments,
# R = bootstrap rounds; strengths are natural-log: P(i beats j) = σ(s_i − s_j).
ELO_SCALE = 400.0 / math.log(10.0)  # Elo points per unit of natural-log strength: 10^(Δ/400) = e^(Δs)
BASELINE_RATING = 1000.0  # the baseline system's rating; the others are placed relative to it


def win_matrix(system_a: np.ndarray, system_b: np.ndarray, score_a: np.ndarray, n_systems: int,
               counts: np.ndarray | None = None) -> np.ndarray:
    """[S, S] wins: W[i, j] = how often i beat j. Judgment k (indices `system_a[k]`, `system_b[k]` into the S
    systems) adds `score_a[k]` (1 = a won, 0 = b won, 0.5 = tie) to W[a, b] and 1 − score_a[k] to W[b, a],
    times `counts[k]` (e.g. how often a bootstrap resample drew it; None = 1 each)."""
    a, b = np.asarray(system_a, dtype=np.int64), np.asarray(system_b, dtype=np.int64)
    score = np.asarray(score_a, dtype=np.float64)
    weight = np.ones_like(score) if counts is None else np.asarray(counts, dtype=np.float64)
    wins = np.zeros((n_systems, n_systems))
    np.add.at(wins, (a, b), weight * score)
    np.add.at(wins, (b, a), weight * (1.0 - score))
    return wins


def elo_ratings(strengths: np.ndarray, baseline: int) -> np.ndarray:
    """Ratings [..., S] on the Elo scale Chatbot Arena shows: ELO_SCALE · (s − s_baseline) + BASELINE_RATING,
    so 400 points more means 10:1 odds of winning. strengths: [..., S] natural-log strengths."""
    s = np.asarray(strengths, dtype=np.float64)
    return ELO_SCALE * (s - s[..., baseline:baseline + 1]) + BASELINE_RATING


def expected_win_rate(strength: np.ndarray, opponent: np.ndarray) -> np.ndarray:
    """P(win) = σ(strength − opponent) under Bradley-Terry (ties count half, as in the fit); broadcasts."""
    return 1.0 / (1.0 + np.exp(-(np.asarray(strength, dtype=np.float64) - np.asarray(opponent, dtype=np.float64))))


def bootstrap_counts(n: int, rounds: int, seed: int) -> np.ndarray:
    """[R, N] how often each of N judgments is drawn in each of R resamples of N with replacement (the
    nonparametric bootstrap over judgments), from numpy's PCG64 seeded with `seed`."""
    if n < 1 or rounds < 1:
        raise ValueError(f"need at least one judgment and one round, got n={n}, rounds={rounds}")
    indices = np.random.default_rng(seed).integers(0, n, size=(rounds, n))
    return np.stack([np.bincount(row, minlength=n) for row in indices])


def percentile_interval(samples: np.ndarray, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """The central `level` interval of bootstrap `samples` [R, ...] along axis 0: the (1 − level)/2 and
    (1 + level)/2 quantiles (numpy's linear interpolation). Returns (low, high), each [...]."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    values = np.asarray(samples, dtype=np.float64)
    return np.quantile(values, (1.0 - level) / 2, axis=0), np.quantile(values, (1.0 + level) / 2, axis=0)
