"""CrowdBT around reward-model training (`reward.annotator_model = "crowd_bt"`).

Before training, each annotator's reliability η and left-side bias λ (`rlhf_core.algorithms.crowd_bt`) come
from the reward-model version the training continues (`reward.warm_start`), or else from a cross-fitted
linear CrowdBT on the frozen features the reward head reads: the judgments are split in two halves by
prompt, a linear CrowdBT fitted by EM on each half scores the other half, and η and λ are fitted on those
out-of-half reward differences (the L2 strength of PILOT_L2_GRID whose differences explain the labels best).
In-sample, a linear fit with thousands of features would explain every one of a few hundred labels, a
coin-flipper's too. Control-pair judgments enter as judgments with a known answer.

Each judgment then trains with the Bradley-Terry weight `bt_weights` gives it (CrowdBT's gradient at d = 0),
relative to a trusted new annotator's and turned around when η < 0.5. Judgments weighing less than
TRAIN_MIN_WEIGHT are left out (they would only take a share of the optimizer steps). Held-out judgments are
turned around alike and kept when they weigh at least HELDOUT_MIN_WEIGHT, so held-out accuracy (and a
round's gate on it) measures the model on labels the annotator model believes.

After training, η and λ are fitted again the same cross-fitted way on the trained trunk's features (at most
ESTIMATE_MAX_JUDGMENTS decisive judgments, a seeded sample): the figures stored with the version, and the
weights of the next training that continues this one.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from rlhf_core.algorithms.crowd_bt import (
    KNOWN_DIFF,
    ReliabilityPrior,
    bt_weights,
    crowd_bt_nll,
    fit_crowd_bt_linear,
    fit_reliability,
    follows_preference,
)
from rlhf_core.config import RewardConfig
from rlhf_core.training.feature_cache import base_pair_features
from rlhf_core.training.reward_data import PreferenceExample, encode_pairs
from storage import Database, RewardModelVersion, control_judgments

PRIOR = ReliabilityPrior()
TRAIN_MIN_WEIGHT = 0.05  # of a trusted annotator's judgment: less is left out of training
HELDOUT_MIN_WEIGHT = 0.5  # held-out judgments weighing less do not count in held-out figures ...
MIN_HELDOUT = 8  # ... unless fewer than this many would be left: then all count (turned around where η < 0.5)
ESTIMATE_MAX_JUDGMENTS = 600  # judgments scored for the after-training estimate (a sample, beyond this)
PILOT_L2_GRID = (1e-3, 1e-2, 1e-1, 1.0)  # the pilot's L2 strengths (fit_linear_bt's units), one kept by likelihood
PILOT_ITERATIONS = 10  # EM iterations of each half's linear fit


@dataclass(frozen=True)
class Reliability:
    """One annotator under CrowdBT: η, λ, and the decisive and control judgments the estimate rests on."""

    eta: float
    left_bias: float
    judgments: int = 0
    control_judgments: int = 0

    @property
    def follows_preference(self) -> float:
        return float(follows_preference(torch.tensor(self.eta), torch.tensor(self.left_bias)))


PRIOR_RELIABILITY = Reliability(eta=PRIOR.eta_follow / (PRIOR.eta_follow + PRIOR.eta_flip),
                                left_bias=PRIOR.left / (PRIOR.left + PRIOR.not_left))


@dataclass(frozen=True)
class KnownJudgment:
    """A decisive judgment of a control pair with a decisive expected answer."""

    annotator: str
    correct: bool
    chosen_left: bool


@dataclass
class CrowdTraining:
    """What training uses: the weighted (and turned-around) training and held-out examples, the estimates
    they come from and where those came from, and counts for the version's metrics."""

    train: list[PreferenceExample]
    heldout: list[PreferenceExample]
    before: dict[str, Reliability]
    source: str
    stats: dict[str, int]


def known_judgments(db: Database) -> list[KnownJudgment]:
    """Control-pair judgments that say something about η: a or b, where a or b was expected."""
    return [KnownJudgment(j.annotator, j.choice == j.expected, j.choice == j.left_side)
            for j in control_judgments(db) if j.expected in ("a", "b") and j.choice in ("a", "b")]


def fit_on_differences(names: Sequence[str], diffs: torch.Tensor, chosen_left: Sequence[bool],
                       known: Sequence[KnownJudgment]) -> dict[str, Reliability]:
    """Each annotator's η and λ by EM with reward differences held fixed (`fit_reliability`): `diffs` [B] of
    the picked over the other side of judgments by `names`, plus the control judgments `known` at ±KNOWN_DIFF."""
    everyone = sorted(set(names) | {k.annotator for k in known})
    if not everyone:
        return {}
    index = {name: i for i, name in enumerate(everyone)}
    d = torch.cat([diffs.detach().double().cpu(),
                   torch.tensor([KNOWN_DIFF if k.correct else -KNOWN_DIFF for k in known], dtype=torch.float64)])
    annotator = torch.tensor([index[n] for n in names] + [index[k.annotator] for k in known], dtype=torch.long)
    left = torch.tensor([float(x) for x in chosen_left] + [float(k.chosen_left) for k in known], dtype=torch.float64)
    eta, left_bias = fit_reliability(d, annotator, left, len(everyone), PRIOR)
    judged, controls = Counter(names), Counter(k.annotator for k in known)
    return {name: Reliability(float(eta[i]), float(left_bias[i]), judged[name], controls[name])
            for name, i in index.items()}


def _judged(examples: Sequence[PreferenceExample]) -> list[PreferenceExample]:
    return [e for e in examples if not e.tie and e.annotator is not None]


def cross_fitted_reliability(stack, examples: Sequence[PreferenceExample], cfg: RewardConfig,  # noqa: ANN001
                             known: Sequence[KnownJudgment], base_cache: Path | None = None
                             ) -> dict[str, Reliability]:
    """η and λ from a cross-fitted linear CrowdBT on the features `cfg`'s reward head reads through the stack's
    `reward` adapter as it is now (see the module docstring): before training, the frozen base's (or the
    warm-started trunk's); after it, the trained trunk's. A head reading other features is replaced by a fresh
    one reading `cfg`'s; one that reads them is kept as it is (a warm start's, a trained one). `base_cache`: the
    folder of the `feature_cache`, only where the adapter is a fresh one (the features are the base's)."""
    judged = _judged(examples)
    names, lefts = [e.annotator for e in judged], [bool(e.chosen_left) for e in judged]
    prompts = sorted({e.prompt_id for e in judged})
    if len(prompts) < 2:
        return fit_on_differences(names, torch.zeros(len(judged)), lefts, known)
    random.Random(cfg.seed).shuffle(prompts)
    half = {p: i % 2 for i, p in enumerate(prompts)}
    folds = torch.tensor([half[e.prompt_id] for e in judged], dtype=torch.long)
    if (stack.reward_pooling, stack.reward_depths) != (cfg.pooling, tuple(float(d) for d in cfg.feature_depths)):
        stack.set_reward_head(cfg.ensemble, cfg.pooling, cfg.feature_depths)  # features need only the layout
    chosen, rejected = base_pair_features(stack, encode_pairs(stack.tokenizer, judged, cfg.max_length),
                                          cfg.batch_size, base_cache)
    x = (chosen - rejected).double()
    return reliability_from_features(x / x.std(dim=0).clamp(min=1e-6), folds, names, lefts, known)


def reliability_from_features(x: torch.Tensor, folds: torch.Tensor, names: Sequence[str], lefts: Sequence[bool],
                              known: Sequence[KnownJudgment]) -> dict[str, Reliability]:
    """η and λ per annotator from standardized feature differences `x` [B, F] (chosen − rejected) of judgments by
    `names`, fitted on out-of-half reward differences (`folds` [B] 0/1) at the PILOT_L2_GRID strength whose
    differences explain the labels best."""
    index = {name: i for i, name in enumerate(sorted(set(names)))}
    annotator = torch.tensor([index[n] for n in names], dtype=torch.long)
    left = torch.tensor(lefts, dtype=torch.float64)
    best: tuple[float, dict[str, Reliability]] | None = None
    for l2 in PILOT_L2_GRID:
        diffs = out_of_half_differences(x, folds, annotator, left, len(index), l2)
        fitted = fit_on_differences(names, diffs, lefts, known)
        nll = float(crowd_bt_nll(diffs, *(torch.tensor([getattr(fitted[n], key) for n in names], dtype=torch.float64)
                                          for key in ("eta", "left_bias")), left).mean())
        if best is None or nll < best[0]:
            best = (nll, fitted)
    return best[1]


def out_of_half_differences(x: torch.Tensor, folds: torch.Tensor, annotator: torch.Tensor, left: torch.Tensor,
                            n_annotators: int, l2: float) -> torch.Tensor:
    """Reward differences [B] of each judgment from a linear CrowdBT fitted on the other half (`folds` [B] 0/1).

    An L2-penalized linear fit depends on its N training rows only through their span, so each half is fitted on
    its rows' coordinates in that span (N x N from the SVD instead of N x F features: the same fit, far faster)."""
    diffs = torch.zeros(len(x), dtype=torch.float64)
    for fold in (0, 1):
        fit = folds != fold
        if not fit.any() or fit.all():
            continue
        basis = torch.linalg.svd(x[fit], full_matrices=False).Vh  # [N, F]: the training rows' span
        theta, _, _ = fit_crowd_bt_linear(x[fit] @ basis.T, annotator[fit], left[fit], n_annotators, l2=l2,
                                          prior=PRIOR, iterations=PILOT_ITERATIONS)
        diffs[~fit] = (x[~fit] @ basis.T) @ theta
    return diffs


def belief_weights(examples: Sequence[PreferenceExample], reliability: dict[str, Reliability]
                   ) -> list[float | None]:
    """Each person's decisive judgment's `bt_weights` relative to a trusted new annotator's (negative: the
    annotator model believes the other side); None for ties and judgments without an annotator."""
    judged = [e for e in examples if not e.tie and e.annotator is not None]
    if not judged:
        return [None] * len(examples)
    rel = [reliability.get(e.annotator, PRIOR_RELIABILITY) for e in judged]
    signed = bt_weights(torch.tensor([r.eta for r in rel]), torch.tensor([r.left_bias for r in rel]),
                        torch.tensor([float(e.chosen_left) for e in judged]))
    trusted = float(bt_weights(*(torch.tensor([v]) for v in (PRIOR_RELIABILITY.eta, PRIOR_RELIABILITY.left_bias,
                                                              0.0))))
    weight = dict(zip(map(id, judged), (signed / trusted).tolist()))
    return [weight.get(id(e)) for e in examples]


def crowd_weighted(examples: Sequence[PreferenceExample], reliability: dict[str, Reliability], min_weight: float
                   ) -> list[PreferenceExample]:
    """`examples` with each person's decisive judgment weighted by `belief_weights` (times its own weight), turned
    around where that is negative, and left out where it is below `min_weight` in absolute value. Ties and
    examples without an annotator pass unchanged."""
    out = []
    for e, w in zip(examples, belief_weights(examples, reliability), strict=True):
        if w is None:
            out.append(e)
        elif abs(w) >= min_weight:
            out.append(replace(_turned(e) if w < 0 else e, weight=e.weight * abs(w)))
    return out


def _turned(e: PreferenceExample) -> PreferenceExample:
    """The judgment read the other way round (its annotator's η is below 0.5)."""
    return replace(e, chosen=e.rejected, rejected=e.chosen, chosen_left=not e.chosen_left)


def evidence_floor(examples: Sequence[PreferenceExample], weights: Sequence[float | None]) -> float:
    """The weight (`belief_weights`) a judgment needs to count in held-out figures and the gate's evidence:
    HELDOUT_MIN_WEIGHT of a trusted annotator's, unless fewer than MIN_HELDOUT decisive examples would be left at
    it: then 0, and every one counts."""
    kept = sum(not e.tie and (w is None or abs(w) >= HELDOUT_MIN_WEIGHT)
               for e, w in zip(examples, weights, strict=True))
    return HELDOUT_MIN_WEIGHT if kept >= MIN_HELDOUT else 0.0


def believed_signs(examples: Sequence[PreferenceExample], reliability: dict[str, Reliability]) -> list[int]:
    """How evidence counts each of `examples` against the labels the annotator model believes, as held-out
    figures do: 1 as judged, -1 turned around (η < 0.5), 0 left out (weighing under HELDOUT_MIN_WEIGHT of a
    trusted annotator's: a coin-flipper's, or a left-biased annotator's "left"), at `evidence_floor`, the rule
    held-out figures use. Ties and unannotated examples: 1."""
    weights = belief_weights(examples, reliability)
    floor = evidence_floor(examples, weights)
    return [1 if w is None else 0 if abs(w) < floor or w == 0 else (1 if w > 0 else -1) for w in weights]


def believed(examples: Sequence[PreferenceExample], reliability: dict[str, Reliability]) -> list[PreferenceExample]:
    """The judgments among `examples` that evidence counts (`believed_signs`), turned around where -1."""
    signs = believed_signs(examples, reliability)
    return [e if sign > 0 else _turned(e) for e, sign in zip(examples, signs, strict=True) if sign]


def stored_reliability(version: RewardModelVersion | None) -> dict[str, Reliability] | None:
    """The estimates a reward-model version stored (`reliability_metrics`), or None if it has none."""
    import json

    if version is None:
        return None
    stored = json.loads(version.metrics_json or "{}").get("annotators")
    if not isinstance(stored, dict) or not stored:
        return None
    return {name: Reliability(float(r["eta"]), float(r["left_bias"]), int(r.get("judgments", 0)),
                              int(r.get("control_judgments", 0))) for name, r in stored.items()}


def prepare_crowd_training(stack, db: Database, train: Sequence[PreferenceExample],  # noqa: ANN001 - a ModelStack
                           heldout: Sequence[PreferenceExample], cfg: RewardConfig,
                           previous: RewardModelVersion | None, warm: bool, base_cache: Path | None = None
                           ) -> CrowdTraining:
    """The estimates before training (the previous version's when `warm`, else the pilot's, on the base's features
    through the `feature_cache` in `base_cache` when given) and the weighted training and held-out examples (see
    the module docstring)."""
    known = known_judgments(db)
    before = stored_reliability(previous) if warm else None
    source = f"reward model v{previous.id}" if before else "cross-fitted linear CrowdBT on the frozen features"
    if before is None:
        before = cross_fitted_reliability(stack, train, cfg, known, None if warm else base_cache)
    weighted_train = crowd_weighted(train, before, TRAIN_MIN_WEIGHT)
    weighted_heldout = crowd_weighted(heldout, before, evidence_floor(heldout, belief_weights(heldout, before)))
    stats = {"crowd_train_left_out": len(train) - len(weighted_train),
             "crowd_heldout_counted": sum(not e.tie for e in weighted_heldout),
             "crowd_turned_around": sum(e.annotator is not None and not e.tie and before.get(
                 e.annotator, PRIOR_RELIABILITY).eta < 0.5 for e in (*train, *heldout))}
    return CrowdTraining(weighted_train, weighted_heldout, before, source, stats)


def reliability_after_training(stack, examples: Sequence[PreferenceExample], cfg: RewardConfig,  # noqa: ANN001
                               known: Sequence[KnownJudgment]) -> dict[str, Reliability]:
    """η and λ on the trained trunk's features (`cross_fitted_reliability`) of the decisive judgments among
    `examples` (as the annotators gave them; a seeded sample of ESTIMATE_MAX_JUDGMENTS when there are more) and
    the controls. Not the trained head's own scores: it has fitted the labels it is asked about, a random
    clicker's as well, so in-sample it finds everybody reliable."""
    judged = _judged(examples)
    if len(judged) > ESTIMATE_MAX_JUDGMENTS:
        judged = random.Random(cfg.seed).sample(judged, ESTIMATE_MAX_JUDGMENTS)
    return cross_fitted_reliability(stack, judged, cfg, known)


def reliability_metrics(crowd: CrowdTraining, after: dict[str, Reliability]) -> dict[str, Any]:
    """What a reward-model version stores: per annotator the after-training η, λ, the share of their labels
    that follow the preference, the judgments counted and the mean weight their judgments trained with."""
    weights: dict[str, list[float]] = {}
    for e in crowd.train:
        if e.annotator is not None and not e.tie:
            weights.setdefault(e.annotator, []).append(e.weight)
    return {
        "annotator_weights_from": crowd.source, **crowd.stats,
        "annotators": {name: {"eta": round(r.eta, 4), "left_bias": round(r.left_bias, 4),
                              "follows_preference": round(r.follows_preference, 4), "judgments": r.judgments,
                              "control_judgments": r.control_judgments,
                              "training_weight": round(sum(weights[name]) / len(weights[name]), 4)
                              if weights.get(name) else 0.0}
                       for name, r in sorted(after.items())},
    }
