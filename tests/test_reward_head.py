"""The reward head on the tiny model: standardized features of several layers, read the same way in
every path, fitted on training responses, saved and loaded; the probe start and temperature scaling
(packed pairs against separate sequences: test_reward_ensemble)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from rlhf_core.config import RewardConfig
from rlhf_core.models.batching import build_sequences, prompt_token_ids, response_token_ids
from rlhf_core.models.reward_head import RewardHead
from rlhf_core.models.stack import ModelStack
from rlhf_core.training.reward_data import PreferenceExample, encode_pairs
from rlhf_core.training.reward_model import pair_features, train_reward_model

CPU = torch.device("cpu")
DEPTHS = (0.0, 0.5, 1.0)


@pytest.fixture
def stack(tiny_model_dir: Path) -> ModelStack:
    return ModelStack.load(tiny_model_dir, device=CPU)


def examples(n: int = 12) -> list[PreferenceExample]:
    words = "apple river garden music window yellow quiet simple".split()
    return [PreferenceExample([{"role": "user", "content": f"q{i}"}], " ".join(words[i % 8:]) + " banana",
                              " ".join(words[: 1 + i % 7]), None, i) for i in range(n)]


def test_head_standardizes_its_features_before_the_members_read_them() -> None:
    head = RewardHead(hidden_size=2, members=1, depths=(0.0, 1.0))
    features = torch.tensor([[1.0, 10.0, 100.0, -5.0], [3.0, 30.0, 300.0, 5.0]])
    head.fit_standardization(features)
    torch.testing.assert_close(head.feature_shift, torch.tensor([2.0, 20.0, 200.0, 0.0]))
    torch.testing.assert_close(head.feature_scale, torch.tensor([2**0.5, 10 * 2**0.5, 100 * 2**0.5, 50**0.5]))
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[1.0, 0.0, 0.0, 2.0]]))
        head.bias.fill_(0.5)
    # Standardized, both rows are (∓1/√2, ...): scores 0.5 + (∓1 ∓ 2)/√2.
    expected = torch.tensor([[0.5 - 3 / 2**0.5], [0.5 + 3 / 2**0.5]])
    torch.testing.assert_close(head(features), expected)
    assert head.layer_indices(30) == [0, 30] and RewardHead(4, 1, depths=DEPTHS).layer_indices(30) == [0, 15, 30]
    with pytest.raises(ValueError, match="fractions in"):
        RewardHead(4, 1, depths=(1.5,))


def test_features_of_several_depths_are_the_pooled_hidden_states_of_those_layers(perturb, stack: ModelStack) -> None:
    perturb(stack, "reward")
    stack.set_reward_head(2, "mean", DEPTHS)
    tok = stack.tokenizer
    prompt = prompt_token_ids(tok, [{"role": "user", "content": "name a fruit"}])
    batch = build_sequences([prompt, prompt], [response_token_ids(tok, "a banana", 16),
                                               response_token_ids(tok, "an apple, I think", 16)], tok.pad_token_id)
    with torch.no_grad():
        got = stack.reward_features(batch.input_ids, batch.attention_mask, batch.response_mask)
        with stack.use("reward"):
            out = stack._decoder()(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                                   output_hidden_states=True, use_cache=False)
    layers = stack.model.get_base_model().config.num_hidden_layers
    assert got.shape == (2, 3 * stack.model.get_base_model().config.hidden_size)
    weights = torch.nn.functional.pad(batch.response_mask, (1, 0)).float().unsqueeze(-1)
    expected = torch.cat([(out.hidden_states[i] * weights).sum(1) / weights.sum(1) for i in (0, layers // 2, layers)],
                         dim=-1)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    assert not torch.equal(got[:, :32], got[:, -32:])  # different layers, different numbers


@pytest.mark.parametrize("pooling", ["mean", "mean+sum"])
def test_a_fresh_head_is_standardized_on_the_training_responses_and_saved_with_them(stack: ModelStack,
                                                                                   tmp_path: Path,
                                                                                   pooling: str) -> None:
    cfg = RewardConfig(epochs=1, batch_size=4, ensemble=2, pooling=pooling, feature_depths=list(DEPTHS),
                       eval_fraction=0.0, early_stopping=False, max_length=64)
    train = examples(12)
    pairs = encode_pairs(stack.tokenizer, train, cfg.max_length)
    stack.set_reward_head(2, pooling, DEPTHS)
    chosen, rejected = pair_features(stack, pairs, 4)  # the identity adapter: the features training starts from
    features = torch.cat([chosen, rejected])
    train_reward_model(stack, train, [], cfg, progress=False)
    head = stack.heads["reward"]
    assert head.depths == DEPTHS and head.in_features == features.shape[1]
    torch.testing.assert_close(head.feature_shift, features.mean(0), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(head.feature_scale, features.std(0).clamp(min=1e-6), atol=1e-5, rtol=1e-4)

    directory = stack.save_adapter("reward", tmp_path / "rm")
    assert json.loads((directory / "adapter.json").read_text())["feature_depths"] == list(DEPTHS)
    scores = stack.reward_members(*_batch(stack)).detach()
    stack.reset_adapter("reward")
    assert stack.reward_depths == (1.0,)
    stack.load_adapter("reward", directory)
    assert stack.reward_depths == DEPTHS and stack.reward_pooling == pooling
    torch.testing.assert_close(stack.reward_members(*_batch(stack)).detach(), scores)


def test_a_head_saved_before_standardization_loads_as_raw_features(stack: ModelStack, tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    stack.set_reward_head(1, "last")
    with torch.no_grad():
        stack.heads["reward"].weight.normal_()
    directory = stack.save_adapter("reward", tmp_path / "old")
    tensors = {k: v for k, v in load_file(str(directory / "adapter.safetensors")).items()
               if k not in ("head.feature_shift", "head.feature_scale")}
    save_file(tensors, str(directory / "adapter.safetensors"))
    meta = json.loads((directory / "adapter.json").read_text())
    del meta["feature_depths"]
    (directory / "adapter.json").write_text(json.dumps(meta))
    scores = stack.reward_members(*_batch(stack)).detach()

    stack.reset_adapter("reward")
    stack.load_adapter("reward", directory)
    head = stack.heads["reward"]
    assert torch.equal(head.feature_shift, torch.zeros_like(head.feature_shift))
    assert torch.equal(head.feature_scale, torch.ones_like(head.feature_scale))
    torch.testing.assert_close(stack.reward_members(*_batch(stack)).detach(), scores)


def _batch(stack: ModelStack) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    tok = stack.tokenizer
    prompt = prompt_token_ids(tok, [{"role": "user", "content": "q"}])
    b = build_sequences([prompt, prompt], [response_token_ids(tok, "a river", 16),
                                           response_token_ids(tok, "quiet music banana", 16)], tok.pad_token_id)
    return b.input_ids, b.attention_mask, b.response_mask


def test_the_probe_alone_is_kept_when_fine_tuning_makes_the_heldout_loss_worse(stack: ModelStack) -> None:
    """With head_init "probe", the probe before any step is early stopping's "epoch 0": a learning rate
    that wrecks the model in one epoch leaves the probe, LoRA untouched, and its held-out figures."""
    from rlhf_core.training.reward_data import split_by_prompt
    from rlhf_core.training.reward_model import heldout_figures

    train, heldout = split_by_prompt(examples(24), 0.25, 0)
    cfg = RewardConfig(learning_rate=1.0, epochs=1, batch_size=8, max_length=64, early_stopping=True, ensemble=2,
                       head_init="probe", feature_depths=list(DEPTHS))
    lora_before = {k: v.clone() for k, v in stack._adapter_state("reward").items()}
    result = train_reward_model(stack, train, heldout, cfg, progress=False)
    assert result.best_epoch == 0 and result.steps > 0
    assert result.history[-1]["heldout_loss"] > result.heldout_loss  # the epoch was worse and was dropped
    assert all(torch.equal(v, lora_before[k]) for k, v in stack._adapter_state("reward").items())
    again = heldout_figures(stack, encode_pairs(stack.tokenizer, heldout, 64), 8)
    assert again.loss == pytest.approx(result.heldout_loss, abs=1e-5)  # epoch 0's figures, read from the probe's
    assert again.accuracy == result.heldout.accuracy  # features, are those of a scoring pass
    assert again.calibration_error == pytest.approx(result.heldout.calibration_error, abs=1e-5)


def test_temperature_scaling_by_hand() -> None:
    from rlhf_core.algorithms import fit_temperature

    # Three of four held-out gaps of +1 agree with the label: mean softplus(−s·gap) is least where
    # σ(s) = 3/4, s = ln 3.
    assert fit_temperature(torch.tensor([1.0, -1.0, 1.0, 1.0])) == pytest.approx(math.log(3), abs=1e-6)
    assert fit_temperature(torch.tensor([2.0, -2.0, 2.0, 2.0])) == pytest.approx(math.log(3) / 2, abs=1e-6)
    assert fit_temperature(torch.tensor([0.5, 2.0])) == pytest.approx(10.0, rel=1e-6)  # separated: the bound
    assert fit_temperature(torch.tensor([])) == 1.0


def test_calibration_scales_the_head_and_keeps_the_rankings(stack: ModelStack) -> None:
    from rlhf_core.training.reward_data import split_by_prompt
    from rlhf_core.training.reward_model import MIN_CALIBRATION_PAIRS, score_pairs

    train, heldout = split_by_prompt(examples(80), 0.25, 0)
    encoded = encode_pairs(stack.tokenizer, heldout, 64)
    assert len(encoded) >= MIN_CALIBRATION_PAIRS
    results, scores = {}, {}
    for calibrate in (False, True):
        cfg = RewardConfig(learning_rate=3e-3, epochs=1, batch_size=8, max_length=64, ensemble=2,
                           head_init="random", calibrate=calibrate, eval_fraction=0.25)
        stack.reset_adapter("reward")
        results[calibrate] = train_reward_model(stack, train, heldout, cfg, progress=False)
        scores[calibrate] = score_pairs(stack, encoded, 8)
    plain, calibrated = results[False], results[True]
    assert plain.temperature is None and calibrated.temperature is not None
    assert calibrated.temperature != pytest.approx(1.0)
    for side in (0, 1):  # same training, scores scaled by the temperature
        torch.testing.assert_close(scores[True][side], scores[False][side] * calibrated.temperature,
                                   atol=1e-4, rtol=1e-4)
    assert calibrated.heldout_accuracy == plain.heldout_accuracy
    assert calibrated.heldout_loss <= plain.heldout_loss + 1e-9
