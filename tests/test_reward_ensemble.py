"""The sample-efficient reward model and active pair selection: tie and ensemble math against hand
numbers, disagreement ranking on the tiny model, early stopping, warm starts, pooling, calibration,
the annotator-accuracy filter in the service, and uncertainty selection when sampling."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest
import torch

from rlhf_core.algorithms.preference import (
    bootstrap_weights,
    davidson_log_likelihood,
    expected_calibration_error,
    pair_information,
    symmetric_calibration_error,
    weighted_bt_loss,
)
from rlhf_core.config import RewardConfig
from rlhf_core.loop.pair_selection import response_member_scores, select_pairs
from rlhf_core.models.batching import build_sequences, prompt_token_ids, response_token_ids
from rlhf_core.models.stack import ModelStack
from rlhf_core.training.reward_data import PreferenceExample, split_by_prompt
from rlhf_core.training.reward_model import train_reward_model
from rlhf_core.training.reward_service import run_reward_training
from rlhf_core.workspace import init_workspace
from storage import (
    add_prompts,
    create_annotator,
    list_prompts,
    list_reward_models,
    next_pair_for,
    record_generations,
    record_judgment,
)

CPU = torch.device("cpu")


# --------------------------------------------------------------------------- math by hand


def test_davidson_probabilities_by_hand() -> None:
    zero = torch.zeros(3)
    probs = davidson_log_likelihood(zero, zero, torch.tensor([0, 1, 2]), torch.tensor(0.0)).exp()
    torch.testing.assert_close(probs, torch.full((3,), 1 / 3))  # d = 0, ν = 1: a, b and tie equally likely
    # d = 2, ν = 1: P(a) = e / (e + 1/e + 1) = 0.6652, P(tie) = 1 / (e + 1/e + 1) = 0.2447
    two = davidson_log_likelihood(torch.tensor([2.0, 2.0]), torch.zeros(2), torch.tensor([0, 2]), torch.tensor(0.0))
    torch.testing.assert_close(two.exp(), torch.tensor([0.6652, 0.2447]), atol=1e-4, rtol=0)
    # ν -> 0 is Bradley-Terry: P(a) = σ(d)
    bt = davidson_log_likelihood(torch.tensor([1.5]), torch.zeros(1), torch.tensor([0]), torch.tensor(-30.0))
    assert math.isclose(float(bt.exp()), 1 / (1 + math.exp(-1.5)), rel_tol=1e-6)


def test_weighted_bt_loss_gives_each_member_its_own_examples() -> None:
    r_c = torch.tensor([[2.0, 2.0], [0.0, 0.0]])  # [B=2, K=2]
    r_r = torch.zeros(2, 2)
    weights = torch.tensor([[1.0, 0.0], [0.0, 1.0]])  # member 0 sees example 0 only, member 1 example 1
    expected = (-math.log(1 / (1 + math.exp(-2))) + math.log(2)) / 2  # (0.1269 + 0.6931) / 2
    assert math.isclose(float(weighted_bt_loss(r_c, r_r, weights)), expected, rel_tol=1e-6)
    boot = bootstrap_weights(50, 3, torch.Generator().manual_seed(0))
    assert boot.shape == (3, 50) and torch.equal(boot[0], torch.ones(50)) and not torch.equal(boot[1], boot[2])


def test_pair_information_by_hand() -> None:
    one = pair_information(torch.tensor([[0.0], [3.0]]), torch.tensor([[0.0], [0.0]]))
    torch.testing.assert_close(one, torch.tensor([1.0, 1.0 - (2 / (1 + math.exp(-3)) - 1)]))
    # Two members: probabilities σ(2) = 0.8808 and σ(-2) = 0.1192 have std 0.3808 -> 0.7616 of the max 0.5.
    split = pair_information(torch.tensor([[2.0, -2.0]]), torch.zeros(1, 2))
    agree = pair_information(torch.tensor([[2.0, 2.0]]), torch.zeros(1, 2))
    torch.testing.assert_close(split, torch.tensor([0.7616]), atol=1e-4, rtol=0)
    assert float(agree) == 0.0


def test_calibration_error_by_hand() -> None:
    # Four predictions of 0.9 with three outcomes of 1: |0.9 - 0.75| = 0.15; two of 0.2 with none: 0.2.
    probs = torch.tensor([0.9, 0.9, 0.9, 0.9, 0.2, 0.2])
    outcomes = torch.tensor([1.0, 1.0, 1.0, 0.0, 0.0, 0.0])
    assert math.isclose(expected_calibration_error(probs, outcomes), 4 / 6 * 0.15 + 2 / 6 * 0.2, rel_tol=1e-6)
    # σ(1.5) = 0.8176 always right: symmetric ECE = 1 - 0.8176 in both orientations.
    assert math.isclose(symmetric_calibration_error(torch.full((5,), 1.5), torch.zeros(5)), 0.18243, rel_tol=1e-4)


# --------------------------------------------------------------------------- on the tiny model


@pytest.fixture
def stack(tiny_model_dir: Path) -> ModelStack:
    return ModelStack.load(tiny_model_dir, device=CPU)


def features(stack: ModelStack, texts: list[str]) -> torch.Tensor:
    """Last-token features of `texts` as answers to one prompt, read through an identity head."""
    hidden = stack.heads["reward"].in_features
    stack.set_reward_head(hidden, "last")
    with torch.no_grad():
        stack.heads["reward"].weight.copy_(torch.eye(hidden))
    conversation = [{"role": "user", "content": "tell me something"}]
    return response_member_scores(stack, [conversation] * len(texts), texts, max_length=64)


def test_disagreement_ranks_a_split_pair_above_an_agreed_one(stack: ModelStack) -> None:
    texts = ["the model reads a book", "a small cat sleeps", "our team wins the game", "the teacher sings"]
    f = features(stack, texts)
    # Two members: both score pair (2, 3) the same way (+3), but split on pair (0, 1) (+3 / −3).
    d01, d23 = f[0] - f[1], f[2] - f[3]
    system = torch.stack([d01, d23])
    member_a = torch.linalg.lstsq(system, torch.tensor([3.0, 3.0])).solution
    member_b = torch.linalg.lstsq(system, torch.tensor([-3.0, 3.0])).solution
    stack.set_reward_head(2, "last")
    with torch.no_grad():
        stack.heads["reward"].weight.copy_(torch.stack([member_a, member_b]))
    conversation = [{"role": "user", "content": "tell me something"}]
    scores = response_member_scores(stack, [conversation] * 4, texts, max_length=64)
    chosen = select_pairs([(2, 3), (0, 1)], "uncertainty", 2, random.Random(0), scores)
    assert chosen.pairs == [(0, 1), (2, 3)] and chosen.selection == "uncertainty"
    assert chosen.info_scores[0] > 0.9 and chosen.info_scores[1] < 0.05
    assert select_pairs([(2, 3), (0, 1)], "uncertainty", 1, random.Random(0), scores).pairs == [(0, 1)]
    assert select_pairs([(2, 3), (0, 1)], "uncertainty", 1, random.Random(0), None).selection == "random"


@pytest.mark.parametrize("pooling", ["mean", "sum", "mean+sum"])
def test_mean_and_sum_pooling_read_the_response_tokens(stack: ModelStack, pooling: str) -> None:
    """"mean" averages the response tokens' states, "sum" adds them up, "mean+sum" reads both (the prompt's
    states are left out)."""
    tok = stack.tokenizer
    prompt = prompt_token_ids(tok, [{"role": "user", "content": "hello there"}])
    response = response_token_ids(tok, "a small cat sleeps")
    batch = build_sequences([prompt, prompt], [response, response[:2]], tok.pad_token_id)
    stack.set_reward_head(1, pooling)
    with torch.no_grad():
        pooled = stack.reward(batch.input_ids, batch.attention_mask, batch.response_mask)
        with stack.use("reward"):
            hidden = stack.hidden_states(batch.input_ids, batch.attention_mask)
        for row, n in enumerate((len(response), 2)):
            states = hidden[row, len(prompt):len(prompt) + n]
            feature = torch.cat([states.mean(dim=0) if part == "mean" else states.sum(dim=0)
                                 for part in pooling.split("+")])
            expected = stack.heads["reward"](feature.unsqueeze(0)).squeeze()
            torch.testing.assert_close(pooled[row], expected, atol=1e-4, rtol=1e-4)


def marker_examples(n_prompts: int = 24) -> list[PreferenceExample]:
    rng = random.Random(0)
    words = "apple river garden music window yellow quiet simple".split()
    out = []
    for pid in range(n_prompts):
        good = " ".join(rng.choice(words) for _ in range(6)) + " banana"
        bad = " ".join(rng.choice(words) for _ in range(7))
        out.append(PreferenceExample([{"role": "user", "content": f"q{pid}"}], good, bad, None, pid))
    return out


def test_early_stopping_keeps_the_epoch_with_the_lowest_heldout_loss(stack: ModelStack) -> None:
    train, heldout = split_by_prompt(marker_examples(), 0.25, 0)
    cfg = RewardConfig(learning_rate=3e-3, epochs=4, batch_size=8, max_length=64, early_stopping=True, ensemble=3,
                       head_init="random")
    result = train_reward_model(stack, train, heldout, cfg, progress=False)
    losses = [row["heldout_loss"] for row in result.history if "heldout_loss" in row]
    assert len(losses) == 4 and stack.reward_members_count == 3
    assert result.best_epoch == 1 + losses.index(min(losses))
    assert result.heldout_loss == pytest.approx(min(losses), abs=1e-6)
    assert result.heldout.calibration_error is not None and 0 <= result.heldout.calibration_error <= 1


def test_davidson_training_learns_a_tie_parameter(stack: ModelStack) -> None:
    examples = marker_examples(12)
    ties = [PreferenceExample(e.prompt_messages, e.rejected, e.rejected + " apple", None, e.prompt_id, tie=True)
            for e in examples[:6]]
    cfg = RewardConfig(learning_rate=3e-3, epochs=2, batch_size=6, max_length=64, ties="davidson", eval_fraction=0)
    result = train_reward_model(stack, examples + ties, [], cfg, progress=False)
    assert result.tie_log_nu is not None and result.tie_log_nu != 0.0
    assert all(math.isfinite(row["loss"]) for row in result.history)


# --------------------------------------------------------------------------- the service on a real database


def test_warm_start_continues_from_the_current_reward_model(tiny_model_dir: Path, sqlite_db, tmp_path: Path,
                                                            judged_pairs) -> None:
    judged_pairs(sqlite_db, 10, {"ann": True})
    ws, _ = init_workspace(tmp_path / "ws", db_url=sqlite_db.url)
    ws.config.reward.epochs, ws.config.reward.warm_start = 1, True
    stack = ModelStack.load(tiny_model_dir, device=CPU)
    first = run_reward_training(ws, sqlite_db, stack, progress=False)
    ws.config.reward.learning_rate = 0.0  # no update: a warm start must reproduce the first version exactly
    second = run_reward_training(ws, sqlite_db, stack, progress=False)
    assert json.loads(second.metrics_json)["warm_start_from"] == first.id
    state_1 = Path(first.adapter_path) / "adapter.safetensors"
    state_2 = Path(second.adapter_path) / "adapter.safetensors"
    from safetensors.torch import load_file

    one, two = load_file(str(state_1)), load_file(str(state_2))
    assert one.keys() == two.keys() and all(torch.equal(one[k], two[k]) for k in one)
    ws.config.reward.warm_start = False
    third = run_reward_training(ws, sqlite_db, stack, progress=False)
    three = load_file(str(Path(third.adapter_path) / "adapter.safetensors"))
    assert not all(torch.equal(one[k], three[k]) for k in one)  # from scratch, lr 0: the initial adapter
    assert len(list_reward_models(sqlite_db)) == 3


def test_low_accuracy_annotators_are_left_out_of_training(tiny_model_dir: Path, sqlite_db, tmp_path: Path,
                                                          judged_pairs) -> None:
    from rlhf_core.data.annotator_quality import low_accuracy_annotators
    from storage import get_annotator
    from storage.labeling.controls import ControlSpec, add_control_pairs

    judged_pairs(sqlite_db, 8, {"good": True, "bad": False})
    # One control pair that "good" gets right and "bad" gets wrong.
    add_control_pairs(sqlite_db, [ControlSpec([{"role": "user", "content": "control"}], "x banana", "y apple", "a")])
    add_prompts(sqlite_db, [[{"role": "user", "content": "one more"}]])  # controls are served beside open pairs
    extra = list_prompts(sqlite_db)[-1]
    record_generations(sqlite_db, prompt_id=extra.id, policy_version_id=0, responses=[("p", 1), ("q", 1)],
                       gen_params={}, pairs=[(0, 1)], judgments_wanted=2)
    for name, right in (("good", True), ("bad", False)):
        user_id = get_annotator(sqlite_db, name).id
        served = next_pair_for(sqlite_db, user_id, control_rate=1.0, rng=random.Random(0))
        while served is not None and "control" not in served.prompt_messages[-1]["content"]:
            served = next_pair_for(sqlite_db, user_id, control_rate=1.0, rng=random.Random(0))
        a = served.left_text if served.left_side == "a" else served.right_text
        record_judgment(sqlite_db, pair_id=served.pair_id, annotator_id=user_id,
                        choice="a" if ("banana" in a) == right else "b")
    assert low_accuracy_annotators(sqlite_db, 0.5) == {"bad"}
    ws, _ = init_workspace(tmp_path / "ws", db_url=sqlite_db.url)
    ws.config.reward.epochs = 1
    stack = ModelStack.load(tiny_model_dir, device=CPU)
    everyone = json.loads(run_reward_training(ws, sqlite_db, stack, progress=False).metrics_json)
    ws.config.reward.min_annotator_accuracy = 0.5
    filtered = json.loads(run_reward_training(ws, sqlite_db, stack, progress=False).metrics_json)
    assert everyone["decisive"] == 16 and everyone["annotators_left_out"] == []
    assert filtered["decisive"] == 8 and filtered["annotators_left_out"] == ["bad"]


def test_sampling_asks_about_the_most_uncertain_pairs(tiny_model_dir: Path, sqlite_db, tmp_path: Path,
                                                     judged_pairs) -> None:
    from rlhf_core.loop.sampling import sample_pairs
    from storage import pair_selection_counts

    ws, _ = init_workspace(tmp_path / "ws", db_url=sqlite_db.url)
    ws.config.model.name = str(tiny_model_dir)
    ws.config.sampling.max_new_tokens = 6
    ws.config.sampling.per_prompt = 4
    ws.config.sampling.pair_selection = "uncertainty"
    ws.config.sampling.max_pairs_per_prompt = 2
    ws.config.reward.epochs, ws.config.reward.ensemble = 1, 3
    add_prompts(sqlite_db, [[{"role": "user", "content": f"say something about {i}"}] for i in range(12)])
    stack = ModelStack.load(tiny_model_dir, device=CPU)
    first = sample_pairs(ws, sqlite_db, stack, n_pairs=8, progress=False)  # no reward model yet: random
    judged_pairs(sqlite_db, 6, {"ann": True})
    run_reward_training(ws, sqlite_db, stack, progress=False)
    second = sample_pairs(ws, sqlite_db, stack, n_pairs=8, progress=False)
    counts = {(row["selection"]): row["pairs"] for row in pair_selection_counts(sqlite_db)}
    assert counts.get("random") == first.pairs > 0 and counts.get("uncertainty") == second.pairs > 0
    from sqlmodel import select

    from storage import Pair

    with sqlite_db.session() as s:
        rows = s.exec(select(Pair).where(Pair.selection == "uncertainty")).all()
    per_prompt: dict[int, list[float]] = {}
    for pair in rows:
        per_prompt.setdefault(pair.prompt_id, []).append(pair.info_score)
    assert all(len(v) <= 2 for v in per_prompt.values()) and any(score > 0 for score in sum(per_prompt.values(), []))
    # The most informative open pair is served first.
    user = create_annotator(sqlite_db, "first-reader", "password123")
    served = next_pair_for(sqlite_db, user.id)
    assert served.pair_id == max(rows, key=lambda p: (p.info_score, -p.id)).id


@pytest.mark.parametrize("pooling", ["last", "mean", "sum", "mean+sum"])
@pytest.mark.parametrize("depths", [(1.0,), (0.0, 0.5, 1.0)])
def test_packed_pairs_score_like_separate_sequences(perturb, stack: ModelStack, pooling: str,
                                                    depths: tuple[float, ...]) -> None:
    """One row per pair with the prompt computed once gives the scores of the 2B separate sequences
    (features of one or several layers, standardized)."""
    from rlhf_core.training.reward_data import encode_pairs, pair_batch
    from rlhf_core.training.reward_model import pair_member_scores

    perturb(stack, "reward")
    stack.set_reward_head(3, pooling, depths)
    with torch.no_grad():
        stack.heads["reward"].feature_shift.normal_(0, 0.1)
        stack.heads["reward"].feature_scale.uniform_(0.5, 2.0)
    pairs = encode_pairs(stack.tokenizer, marker_examples(5), 64)
    with torch.no_grad():
        packed_c, packed_r, _ = pair_member_scores(stack, pairs)
        batch, _ = pair_batch(pairs, stack.tokenizer.pad_token_id, with_margin=False)
        separate = stack.reward_members(batch.input_ids, batch.attention_mask, batch.response_mask)
    torch.testing.assert_close(packed_c, separate[:5], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(packed_r, separate[5:], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("pooling", ["last", "mean"])
def test_pairs_sharing_prompts_score_each_distinct_response_once_as_separate_sequences(perturb, stack: ModelStack,
                                                                                       pooling: str) -> None:
    """All pairs among a prompt's samples (shared responses, more than a row's slots): scored once per
    distinct response, in training (with gradients) and held-out scoring, they equal the 2B separate sequences."""
    from rlhf_core.training.reward_data import encode_pairs, packed_unique_responses, pair_batch
    from rlhf_core.training.reward_model import pair_member_scores, score_pairs

    perturb(stack, "reward")
    stack.set_reward_head(3, pooling)
    examples = []
    for pid, n in ((0, 8), (1, 3), (2, 4)):  # 28 + 3 + 6 pairs from 15 distinct responses
        texts = [f"answer {pid} " + "river " * k + "banana" * (k % 2) for k in range(n)]
        examples += [PreferenceExample([{"role": "user", "content": f"q{pid}"}], a, b, None, pid)
                     for i, a in enumerate(texts) for b in texts[i + 1:]]
    pairs = encode_pairs(stack.tokenizer, examples, 64)
    batches, chosen, rejected = packed_unique_responses(pairs, stack.tokenizer.pad_token_id, rows_per_batch=2)
    assert sum(int(b.present.sum()) for b in batches) == 15  # each distinct response once
    assert max(b.response_masks.shape[1] for b in batches) == 6  # prompt 0's 8 responses take two rows
    assert len(chosen) == len(rejected) == len(pairs) == 37 and int(torch.cat([chosen, rejected]).max()) == 14
    batch, _ = pair_batch(pairs, stack.tokenizer.pad_token_id, with_margin=False)
    with torch.no_grad():
        separate = stack.reward_members(batch.input_ids, batch.attention_mask, batch.response_mask).float()
        held_c, held_r = score_pairs(stack, pairs, batch_size=2)
    train_c, train_r, _ = pair_member_scores(stack, pairs)
    for chosen, rejected in ((held_c, held_r), (train_c.detach().float(), train_r.detach().float())):
        torch.testing.assert_close(chosen, separate[:37], atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(rejected, separate[37:], atol=1e-4, rtol=1e-4)
    assert train_c.requires_grad  # the training path keeps the graph


def test_prompt_grouped_batches_keep_each_prompts_pairs_together() -> None:
    from rlhf_core.training.reward_data import EncodedPair, prompt_grouped_batches

    rng = random.Random(0)
    pairs = [EncodedPair(prompt=[100 + p], chosen=[c, 1], rejected=[c + 50, 1, 2], strength=None) for p in range(30)
             for c in range(1 + p % 6)]  # 30 prompts with 1 to 6 pairs: 105 pairs
    for batch_size in (1, 8, 20):
        batches = prompt_grouped_batches(pairs, batch_size, rng)
        assert sorted(i for b in batches for i in b) == list(range(len(pairs)))  # every pair once
        for b in batches:
            prompts = {pairs[i].prompt[0] for i in b}
            assert all(sum(1 for q in pairs if q.prompt[0] == p) == sum(1 for i in b if pairs[i].prompt[0] == p)
                       for p in prompts)  # a prompt's pairs are never split
        assert sum(len(b) < batch_size for b in batches) <= 1  # at least batch_size pairs, bar the last one
    assert prompt_grouped_batches(pairs, 8, random.Random(1)) != prompt_grouped_batches(pairs, 8, random.Random(2))


def test_small_training_batches_attend_eagerly_with_sdpa_results(perturb, stack: ModelStack, monkeypatch) -> None:
    """CPU training forwards of small batches use eager attention (a faster backward than torch's CPU flash
    kernel): scores and LoRA gradients equal sdpa's, with the packed pairs' boolean 4D mask too."""
    import rlhf_core.models.stack as stack_module
    from rlhf_core.training.reward_data import encode_pairs
    from rlhf_core.training.reward_model import pair_member_scores

    monkeypatch.setattr(stack, "checkpoint_min_tokens", None)  # as `auto` for small batches: no checkpointing
    perturb(stack, "reward")
    stack.set_reward_head(2, "mean")
    pairs = encode_pairs(stack.tokenizer, marker_examples(5), 64)
    config = stack.model.get_base_model().config
    kernels: list[str] = []
    layer = stack._decoder().layers[0]
    hook = layer.register_forward_pre_hook(lambda *_: kernels.append(config._attn_implementation))

    def scores_and_grads() -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        params = stack.trainable_parameters("reward")
        with stack.use("reward"):
            chosen, rejected, _ = pair_member_scores(stack, pairs)
            (chosen - rejected).pow(2).sum().backward()
        grads = [p.grad.clone() for p in params if p.grad is not None]
        stack.freeze_adapters()
        for p in params:
            p.grad = None
        return chosen.detach(), rejected.detach(), grads

    eager = scores_and_grads()
    monkeypatch.setattr(stack_module, "EAGER_ATTENTION_MAX", 0)
    sdpa = scores_and_grads()
    hook.remove()
    assert kernels == ["eager", "sdpa"] and config._attn_implementation == "sdpa"
    torch.testing.assert_close(eager[0], sdpa[0], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(eager[1], sdpa[1], atol=1e-4, rtol=1e-4)
    assert len(eager[2]) == len(sdpa[2]) > 0
    for a, b in zip(eager[2], sdpa[2], strict=True):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-3)
