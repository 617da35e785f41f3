"""The baseline of `bench/reward_learning.py`: a frozen-feature linear probe, i.e. logistic
Bradley-Terry r(x) = θ · φ(x) on the frozen base model's pooled last-layer hidden states φ (the
reward adapter at its identity initialisation), fitted by the product's `fit_head_by_probe`
(L2 picked on a prompt-disjoint split) with no fine-tuning of the trunk."""

from __future__ import annotations

import torch

from rlhf_core.algorithms.preference import bootstrap_weights
from rlhf_core.training.reward_data import encode_pairs, split_by_prompt
from rlhf_core.training.reward_model import fit_head_by_probe, standardize_head


def fit_linear_probe(stack, examples, *, pooling: str, max_length: int, batch_size: int = 16,
                     depths: tuple[float, ...] = (1.0,)) -> float:
    """Reset the reward adapter and fit a one-member probe head on `examples` (features of the layers at
    `depths`, standardized as the product's head standardizes them); returns the chosen L2."""
    stack.reset_adapter("reward")
    stack.set_reward_head(1, pooling, depths)
    train, val = split_by_prompt(examples, 0.25, 0)
    tok = stack.tokenizer
    encoded_train, encoded_val = encode_pairs(tok, train, max_length), encode_pairs(tok, val, max_length)
    standardize_head(stack, encoded_train, batch_size)
    weights = bootstrap_weights(len(encoded_train), 1, torch.Generator().manual_seed(0))
    return fit_head_by_probe(stack, encoded_train, encoded_val, weights, batch_size)
