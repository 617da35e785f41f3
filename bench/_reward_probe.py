"""The baseline of `bench/reward_learning.py`: a frozen-feature linear probe, i.e. logistic
Bradley-Terry r(x) = θ · φ(x) on the frozen base model's pooled, standardized hidden states φ of the
chosen layers (the reward adapter at its identity initialisation), fitted by the product's
`start_head` (L2 picked on a prompt-disjoint split) with no fine-tuning of the trunk."""

from __future__ import annotations

import torch

from rlhf_core.config import RewardConfig
from rlhf_core.training.reward_data import encode_pairs, split_by_prompt
from rlhf_core.training.reward_model import start_head


def fit_linear_probe(stack, examples, *, pooling: str, max_length: int, batch_size: int = 16,
                     depths: tuple[float, ...] = (1.0,)) -> float:
    """Reset the reward adapter and fit a one-member probe head on `examples` (features of the layers at
    `depths`, standardized as the product's head standardizes them); returns the chosen L2."""
    stack.reset_adapter("reward")
    train, val = split_by_prompt(examples, 0.25, 0)
    tok = stack.tokenizer
    encoded_train, encoded_val = encode_pairs(tok, train, max_length), encode_pairs(tok, val, max_length)
    cfg = RewardConfig(ensemble=1, pooling=pooling, feature_depths=list(depths), head_init="probe",
                       batch_size=batch_size)
    return start_head(stack, encoded_train, encoded_val, torch.ones(1, len(encoded_train)), cfg)[0]
