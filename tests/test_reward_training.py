"""Reward-model training: judgment -> example mapping, prompt-disjoint splits, learning a synthetic
preference on a tiny model, exact save/load, the retraining service on a real database, and 4-bit."""

from __future__ import annotations

import json
import random
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from rlhf_core.config import RewardConfig
from rlhf_core.models.stack import ModelStack
from rlhf_core.models.tiny import _OBJECTS, _SUBJECTS, _VERBS
from rlhf_core.training.reward_data import (
    PreferenceExample,
    encode_pair,
    pair_batch,
    preference_examples,
    split_by_prompt,
)
from rlhf_core.training.reward_model import evaluate_reward_model, train_reward_model
from rlhf_core.training.reward_service import run_reward_training
from rlhf_core.workspace import init_workspace
from storage import (
    JudgmentRow,
    add_prompts,
    create_annotator,
    list_prompts,
    list_reward_models,
    next_pair_for,
    record_generations,
    record_judgment,
    training_logs,
)

CPU = torch.device("cpu")
WORDS = sorted({w for phrase in _SUBJECTS + _VERBS + _OBJECTS for w in phrase.split()})
MARKER = "banana"
# Small enough to train in about a second on CPU; learns the marker on every stack seed tried.
FAST = RewardConfig(learning_rate=1e-3, epochs=4, batch_size=8, max_length=128, eval_fraction=0.25, seed=0)


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    # The tiny model's matmuls are too small to gain from intra-op threads, and on a shared,
    # busy machine two spinning OpenMP threads make this module several times slower.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def row(choice: str, *, prompt_id: int = 1, strength: str | None = None, jid: int = 1) -> JudgmentRow:
    return JudgmentRow(
        judgment_id=jid, pair_id=jid, prompt_id=prompt_id, prompt_messages=[{"role": "user", "content": "hi"}],
        prompt_split="train", text_a="A text", text_b="B text", version_a=0, version_b=0, choice=choice,
        strength=strength, rationale=None, annotator="u", left_side="a", round=0, kind="train",
        created_at=datetime.now(timezone.utc),
    )


def synthetic_examples(n_prompts: int = 60, per_prompt: int = 2, seed: int = 0, *, flip: bool = False
                       ) -> list[PreferenceExample]:
    """Chosen responses contain MARKER somewhere; rejected ones are other random words.

    Both sides are independent word salads of similar length, so the untrained model has no
    systematic reason to prefer either (the marker is one word among 9-17). flip=True swaps sides.
    """
    rng = random.Random(seed)
    out = []
    for pid in range(n_prompts):
        question = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 6))) + "?"
        for _ in range(per_prompt):
            good = [rng.choice(WORDS) for _ in range(rng.randint(8, 16))]
            good.insert(rng.randint(0, len(good)), MARKER)
            bad = [rng.choice(WORDS) for _ in range(rng.randint(9, 17))]
            chosen, rejected = " ".join(good), " ".join(bad)
            if flip:
                chosen, rejected = rejected, chosen
            out.append(PreferenceExample([{"role": "user", "content": question}], chosen, rejected, None, pid))
    return out


# --------------------------------------------------------------------------- data


def test_preference_examples_map_choices_and_exclude_ties_and_both_bad():
    rows = [row("a", jid=1, strength="clear"), row("b", jid=2), row("tie", jid=3), row("both_bad", jid=4),
            row("tie", jid=5), row("b", jid=6, prompt_id=2)]
    examples, stats = preference_examples(rows)
    assert stats == {"judgments": 6, "decisive": 3, "ties_excluded": 2, "both_bad_excluded": 1}
    assert [(e.chosen, e.rejected) for e in examples] == [("A text", "B text"), ("B text", "A text"),
                                                          ("B text", "A text")]
    assert [e.strength for e in examples] == ["clear", None, None]
    assert [e.prompt_id for e in examples] == [1, 1, 2]
    with pytest.raises(ValueError, match="unknown choice 'maybe'"):
        preference_examples([row("maybe")])


def test_split_by_prompt_is_disjoint_and_deterministic():
    examples = synthetic_examples(n_prompts=20, per_prompt=3)
    train, heldout = split_by_prompt(examples, 0.25, seed=7)
    assert {e.prompt_id for e in train}.isdisjoint({e.prompt_id for e in heldout})
    assert len({e.prompt_id for e in heldout}) == 5 and len(train) + len(heldout) == 60
    assert split_by_prompt(examples, 0.25, seed=7) == (train, heldout)
    assert split_by_prompt(examples, 0.25, seed=8)[1] != heldout

    one_prompt = [e for e in examples if e.prompt_id == 0]
    train, heldout = split_by_prompt(one_prompt, 0.25, seed=0)
    assert heldout == [] and train == one_prompt
    assert len({e.prompt_id for e in split_by_prompt(examples[:6], 0.1, seed=0)[1]}) == 1  # two prompts: one held out


def test_truncation_keeps_prompt_end_and_caps_responses(tiny_model_dir: Path):
    from rlhf_core.models.loading import load_tokenizer

    tok = load_tokenizer(tiny_model_dir)
    long_prompt = " ".join(["the question"] * 100) + " final words"
    ex = PreferenceExample([{"role": "user", "content": long_prompt}], "a short poem " * 100, "yes", None, 0)
    enc = encode_pair(tok, ex, max_length=64)
    assert len(enc.prompt) + len(enc.chosen) <= 64 and len(enc.prompt) + len(enc.rejected) <= 64
    assert len(enc.prompt) >= 32  # the prompt keeps at least half the budget
    assert enc.chosen[-1] == enc.rejected[-1] == tok.eos_token_id  # the score is read at end of turn
    assert tok.decode(enc.prompt).endswith("final words<|im_end|>\n<|im_start|>assistant\n")


def test_padded_batch_scores_equal_unpadded_scores_although_pad_is_eos(tiny_model_dir: Path):
    stack = ModelStack.load(tiny_model_dir, device=CPU)
    assert stack.tokenizer.pad_token_id == stack.tokenizer.eos_token_id
    short = encode_pair(stack.tokenizer, synthetic_examples(1, 1)[0], 128)
    long = encode_pair(stack.tokenizer, synthetic_examples(1, 1, seed=3)[0], 128)
    with torch.no_grad():
        batch, _ = pair_batch([short, long], stack.tokenizer.pad_token_id, with_margin=False)
        together = stack.reward(batch.input_ids, batch.attention_mask)
        alone, _ = pair_batch([short], stack.tokenizer.pad_token_id, with_margin=False)
        alone_scores = stack.reward(alone.input_ids, alone.attention_mask)
    assert batch.input_ids.shape[0] == 4  # chosen rows then rejected rows, one forward pass
    torch.testing.assert_close(together[[0, 2]], alone_scores, atol=1e-5, rtol=1e-5)


# --------------------------------------------------------------------------- learning


@pytest.fixture(scope="module")
def trained(tiny_model_dir: Path):
    """A stack trained on the synthetic marker preference, with its held-out split and result."""
    train, heldout = split_by_prompt(synthetic_examples(), FAST.eval_fraction, FAST.seed)
    stack = ModelStack.load(tiny_model_dir, device=CPU)
    untrained = evaluate_reward_model(stack, heldout, FAST)
    steps: list[dict] = []
    result = train_reward_model(stack, train, heldout, FAST, on_step=steps.append, progress=False)
    return stack, heldout, untrained, result, steps


def test_reward_model_learns_marker_preference(trained):
    stack, heldout, (untrained_acc, _), result, steps = trained
    assert untrained_acc is not None and untrained_acc < 0.9  # the assertion below can fail
    assert result.n_train == 90 and result.n_heldout == len(heldout) == 30
    assert result.heldout_accuracy > 0.9
    assert result.heldout_loss < 0.3 and result.train_loss < result.history[0]["loss"]
    # The kept epoch's figures describe the weights kept (re-measured here).
    assert (result.heldout_accuracy, result.heldout_loss) == pytest.approx(evaluate_reward_model(stack, heldout, FAST))
    assert result.steps == len(result.history) == len(steps) == 4 * 12
    assert set(steps[0]) >= {"step", "loss", "accuracy", "reward_margin", "lr"}
    assert [s["step"] for s in steps] == list(range(1, 49)) and steps[0]["lr"] == FAST.learning_rate
    assert not stack.model.training
    assert not any(p.requires_grad for p in stack.model.parameters())  # frozen after training
    assert not any(p.requires_grad for p in stack.heads["reward"].parameters())


def test_learned_direction_comes_from_the_labels(tiny_model_dir: Path, trained):
    """Trained on the flipped preference, the model ranks the original pairs the other way round."""
    _, heldout, _, _, _ = trained
    train_flipped, _ = split_by_prompt(synthetic_examples(flip=True), FAST.eval_fraction, FAST.seed)
    stack = ModelStack.load(tiny_model_dir, device=CPU)
    train_reward_model(stack, train_flipped, [], FAST, progress=False)
    accuracy, _ = evaluate_reward_model(stack, heldout, FAST)
    assert accuracy < 0.1


def test_saved_adapter_reloads_to_identical_scores(tiny_model_dir: Path, trained, tmp_path: Path):
    stack, heldout, _, result, _ = trained
    directory = stack.save_adapter("reward", tmp_path / "rm")
    fresh = ModelStack.load(tiny_model_dir, device=CPU, seed=123)  # different random head before loading
    fresh.load_adapter("reward", directory)
    batch, _ = pair_batch([encode_pair(stack.tokenizer, e, FAST.max_length) for e in heldout[:8]],
                          stack.tokenizer.pad_token_id, with_margin=False)
    with torch.no_grad():
        expected = stack.reward(batch.input_ids, batch.attention_mask)
        got = fresh.reward(batch.input_ids, batch.attention_mask)
    assert torch.equal(got, expected)
    assert evaluate_reward_model(fresh, heldout, FAST)[0] == result.heldout_accuracy


def test_strength_margin_is_used_when_configured(tiny_model_dir: Path):
    examples = [PreferenceExample([{"role": "user", "content": "q"}], "good answer", "bad", "strong", 0)] * 4
    results = {}
    for use_margin in (False, True):
        stack = ModelStack.load(tiny_model_dir, device=CPU)
        # A random head: a probe would separate four copies of one pair at once (loss 0 either way).
        cfg = RewardConfig(learning_rate=1e-3, epochs=1, batch_size=4, use_strength_margin=use_margin,
                           head_init="random")
        results[use_margin] = train_reward_model(stack, examples, [], cfg, progress=False).history[0]
    assert results[True]["reward_margin"] == pytest.approx(results[False]["reward_margin"])
    # −log σ(d − 1) > −log σ(d): the "strong" margin of 1.0 raises the same batch's loss.
    assert results[True]["loss"] > results[False]["loss"]


def test_max_steps_caps_training_and_ends_the_last_epoch_early(tiny_model_dir: Path):
    train, heldout = split_by_prompt(synthetic_examples(n_prompts=20), 0.25, 0)  # 30 pairs: 4 steps per epoch
    stack = ModelStack.load(tiny_model_dir, device=CPU)
    capped = replace(FAST, epochs=3, max_steps=6)
    result = train_reward_model(stack, train, heldout, capped, progress=False)
    assert [r["epoch"] for r in result.history] == [1, 1, 1, 1, 2, 2]
    assert result.steps == 6 and result.best_epoch in (1, 2)
    uncapped = train_reward_model(stack, train, heldout, replace(capped, max_steps=0), progress=False)
    assert uncapped.steps == 12 and {r["epoch"] for r in uncapped.history} == {1, 2, 3}


# --------------------------------------------------------------------------- service


def _judge_all(db, annotators: list[int], choose) -> None:
    """Every annotator judges every pair it is served; `choose(a_text, b_text, annotator_index)` -> choice."""
    for i, annotator_id in enumerate(annotators):
        while (served := next_pair_for(db, annotator_id, rng=random.Random(i))) is not None:
            a, b = ((served.left_text, served.right_text) if served.left_side == "a"
                    else (served.right_text, served.left_text))
            record_judgment(db, pair_id=served.pair_id, annotator_id=annotator_id, choice=choose(a, b, i))


def _seed_pairs(db, n_prompts: int, *, k: int) -> None:
    rng = random.Random(1)
    add_prompts(db, [[{"role": "user", "content": f"question number {i}"}] for i in range(n_prompts)])
    for prompt in list_prompts(db):
        good = " ".join(rng.choice(WORDS) for _ in range(6)) + f" {MARKER}"
        bad = " ".join(rng.choice(WORDS) for _ in range(7))
        responses = [(good, 8), (bad, 7)] if prompt.id % 2 else [(bad, 7), (good, 8)]
        record_generations(db, prompt_id=prompt.id, policy_version_id=0, responses=responses, gen_params={},
                           pairs=[(0, 1)], judgments_wanted=k)


def _workspace(tmp_path: Path, db):
    ws, _ = init_workspace(tmp_path / "ws", db_url=db.url)
    return ws


def test_run_reward_training_records_a_version_with_adapter_and_logs(tiny_model_dir: Path, sqlite_db,
                                                                     tmp_path: Path):
    _seed_pairs(sqlite_db, 8, k=2)
    annotators = [create_annotator(sqlite_db, f"ann{i}", "password123").id for i in range(2)]
    odd = {"tie": 0, "both_bad": 0}

    def choose(a: str, b: str, who: int) -> str:
        if who == 1 and odd["tie"] == 0:
            odd["tie"] += 1
            return "tie"
        if who == 1 and odd["both_bad"] == 0:
            odd["both_bad"] += 1
            return "both_bad"
        return "a" if MARKER in a else "b"

    _judge_all(sqlite_db, annotators, choose)
    ws = _workspace(tmp_path, sqlite_db)
    stack = ModelStack.load(tiny_model_dir, device=CPU)
    progress: list[tuple[float, str]] = []
    version = run_reward_training(ws, sqlite_db, stack, progress=False,
                                  on_progress=lambda f, m: progress.append((f, m)))

    [stored] = list_reward_models(sqlite_db)
    assert stored.id == version.id and stored.heldout_accuracy is not None and stored.heldout_loss is not None
    assert Path(stored.adapter_path) == ws.adapters_dir / "reward-v0001"
    assert (Path(stored.adapter_path) / "adapter.safetensors").is_file()
    metrics = json.loads(stored.metrics_json)
    assert metrics["ties_excluded"] == 1 and metrics["both_bad_excluded"] == 1 and metrics["decisive"] == 14
    assert stored.trained_on == metrics["n_train"] and metrics["n_train"] + metrics["n_heldout"] == 14
    assert metrics["n_heldout"] > 0 and metrics["seconds"] > 0 and "train_loss" in metrics
    logs = training_logs(sqlite_db, phase="reward")
    assert len(logs) == metrics["steps"] > 0 and {"loss", "accuracy", "reward_margin", "lr"} <= set(logs[0])
    fractions = [f for f, _ in progress]
    assert fractions[0] == 0.0 and fractions[-1] == 1.0 and fractions == sorted(fractions)

    # Retraining starts from a fresh adapter and head: same judgments, same weights, next version dir.
    stack.load_adapter("reward", Path(stored.adapter_path))  # the state a later round would start from
    second = run_reward_training(ws, sqlite_db, stack, progress=False)
    assert Path(second.adapter_path).name == "reward-v0002"
    first_w = load_file(str(Path(stored.adapter_path) / "adapter.safetensors"))
    second_w = load_file(str(Path(second.adapter_path) / "adapter.safetensors"))
    assert first_w.keys() == second_w.keys()
    assert all(torch.equal(first_w[k], second_w[k]) for k in first_w)


def test_run_reward_training_refuses_too_few_judgments(tiny_model_dir: Path, sqlite_db, tmp_path: Path):
    _seed_pairs(sqlite_db, 4, k=1)
    annotator = create_annotator(sqlite_db, "ann", "password123").id
    choices = iter(["a", "b", "tie", "a"])
    _judge_all(sqlite_db, [annotator], lambda a, b, who: next(choices))
    ws = _workspace(tmp_path, sqlite_db)
    stack = ModelStack.load(tiny_model_dir, device=CPU)
    with pytest.raises(ValueError, match=r"need at least 4 decisive .* have 3 \(1 ties .*collect more"):
        run_reward_training(ws, sqlite_db, stack, progress=False)
    assert list_reward_models(sqlite_db) == []
    assert training_logs(sqlite_db, phase="reward") == []
    assert not any(ws.adapters_dir.iterdir())


# --------------------------------------------------------------------------- 4-bit


def test_training_on_a_4bit_base_updates_only_the_reward_lora(tiny_model_dir: Path):
    pytest.importorskip("bitsandbytes")
    stack = ModelStack.load(tiny_model_dir, quantize_4bit=True, device=CPU)
    assert stack.quantized
    lora = {n: p for n, p in stack.model.named_parameters() if ".reward." in n and "lora_" in n}
    others = {n: p.detach().clone() for n, p in stack.model.named_parameters() if n not in lora}
    grad_norms: list[float] = []

    def on_step(_: dict) -> None:  # gradients of the step just taken are still on the parameters
        grad_norms.append(sum(float(p.grad.norm()) for p in lora.values() if p.grad is not None))

    examples = synthetic_examples(n_prompts=4, per_prompt=2)
    cfg = RewardConfig(learning_rate=1e-3, epochs=2, batch_size=4, max_length=96)
    result = train_reward_model(stack, examples, [], cfg, on_step=on_step, progress=False)
    losses = [h["loss"] for h in result.history]
    assert len(losses) == 4 and all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < losses[0]
    assert all(g > 0 for g in grad_norms)
    assert all(torch.equal(p, others[n]) for n, p in stack.model.named_parameters() if n in others)
    assert any(float(p.abs().sum()) > 0 for n, p in lora.items() if "lora_B" in n)  # B starts at zero
