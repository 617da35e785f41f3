"""The policy gate's evidence from all judgments: cross-fitted accuracy of a linear Bradley-Terry probe on the base
model's frozen features. Each decisive judgment is predicted by a probe fitted on the other folds (k folds by
prompt), so every judgment counts once and no prediction comes from a fit that saw it; the base's features saw no
judgment at all (a warm-started reward model's trunk has), so the figure is honest from round one."""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path

from rlhf_core.algorithms.evidence import Accuracy, accuracy_of, cross_fitted_margins, fold_of
from rlhf_core.config import RewardConfig
from rlhf_core.models.stack import ModelStack
from rlhf_core.training.feature_cache import base_pair_features
from rlhf_core.training.reward_data import PreferenceExample, encode_pairs

FOLDS = 5
PROBE_L2 = 0.1  # one fixed strength (choosing it by the result would inflate the figure); fit_linear_bt's units
MAX_JUDGMENTS = 600  # judgments read (a seeded sample beyond this): the cost of one pass over them


def crossfit_accuracy(stack: ModelStack, examples: Sequence[PreferenceExample], cfg: RewardConfig,
                      cache_folder: Path | None = None) -> Accuracy:
    """Cross-fitted accuracy over the decisive judgments of people among `examples` (prior judgments and ties
    left out), read through a fresh `reward` adapter (the base's features, through the `feature_cache` in
    `cache_folder` when given; the caller loads any warm start after this). Fewer than two prompts: nothing to
    cross-fit (0 of 0)."""
    judged = [e for e in examples if not e.tie and e.annotator is not None]
    if len(judged) > MAX_JUDGMENTS:
        judged = random.Random(cfg.seed).sample(judged, MAX_JUDGMENTS)
    if len({e.prompt_id for e in judged}) < 2:
        return Accuracy(0, 0)
    stack.reset_adapter("reward")
    stack.set_reward_head(cfg.ensemble, cfg.pooling, cfg.feature_depths)
    chosen, rejected = base_pair_features(stack, encode_pairs(stack.tokenizer, judged, cfg.max_length),
                                          cfg.batch_size, cache_folder)
    diff = (chosen - rejected).double()
    diff = diff / diff.std(dim=0).clamp(min=1e-6)
    folds = fold_of([e.prompt_id for e in judged], min(FOLDS, len({e.prompt_id for e in judged})), cfg.seed)
    return accuracy_of(cross_fitted_margins(diff, folds, PROBE_L2))
