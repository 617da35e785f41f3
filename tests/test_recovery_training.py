"""Training resumes from its checkpoint (issue 41): each trainer (reward model, PPO, GRPO, DPO, SFT) stopped
after a checkpoint and started again on a fresh adapter goes on exactly as the uninterrupted run did: the same loss
at every step after the checkpoint, and the steps before it kept in its history. The checkpoint is one file,
replaced atomically; a damaged one or one written for other inputs is not resumed."""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from rlhf_core.config import PolicyConfig, RewardConfig, SFTConfig
from rlhf_core.models.stack import ModelStack
from rlhf_core.training.checkpoint import Checkpoint
from rlhf_core.training.dpo import DPOExamples, train_dpo
from rlhf_core.training.policy import train_policy
from rlhf_core.training.ppo import fresh_critic
from rlhf_core.training.reward_data import PreferenceExample
from rlhf_core.training.reward_model import train_reward_model
from rlhf_core.training.rollout import Rollout
from rlhf_core.training.sft import SFTExample, train_sft

PROMPTS = [[{"role": "user", "content": f"tell me about topic {i}"}] for i in range(8)]


class Crash(RuntimeError):
    """Stands for the worker's death at a step (tests/test_recovery_jobs.py kills a real one)."""


@pytest.fixture(autouse=True)
def _one_thread(one_thread) -> None:  # noqa: ANN001 - conftest's fixture
    """Every test here runs with one torch thread."""


@pytest.fixture
def stack(tiny_model_dir: Path) -> ModelStack:
    return ModelStack.load(tiny_model_dir, device="cpu")


def preference_examples(n: int) -> list[PreferenceExample]:
    rng = random.Random(0)
    return [PreferenceExample([{"role": "user", "content": f"question {i}"}], f"banana {rng.random():.3f} yes",
                              f"apple {rng.random():.4f}", None, i) for i in range(n)]


def halves_score(stack: ModelStack) -> Callable[[Rollout], torch.Tensor]:
    half = len(stack.tokenizer) // 2
    return lambda rollout: torch.tensor([sum(t < half for t in ids) / max(1, len(ids)) for ids in rollout.response_ids])


def crash_then_resume(tmp_path: Path, train: Callable[..., list[dict]], fresh: Callable[[], None], *, crash_at: int,
                      every: int, key: str) -> tuple[list[float], list[float], Checkpoint]:
    """The losses (`key`) of an uninterrupted run, and of a run stopped at step `crash_at` (checkpoints every
    `every` steps) then started again from a fresh adapter with the same checkpoint file."""
    fresh()
    reference = [row[key] for row in train(None, None)]

    steps = [0]

    def die(row: dict) -> None:
        steps[0] += 1
        if steps[0] == crash_at:  # before that step's checkpoint would be written
            raise Crash(f"killed at step {crash_at}")

    path = tmp_path / "job-000001" / "phase.pt"
    fresh()
    with pytest.raises(Crash):
        train(Checkpoint(path, every), die)
    assert path.is_file() and not path.with_name("phase.pt.tmp").exists()  # the last complete checkpoint
    fresh()  # a new worker process: fresh adapters, the same checkpoint file
    checkpoint = Checkpoint(path, every)
    resumed = [row[key] for row in train(checkpoint, None)]
    return reference, resumed, checkpoint


def assert_continues(reference: list[float], resumed: list[float], checkpoint: Checkpoint, at: int) -> None:
    assert checkpoint.resumed_from == at
    assert len(resumed) == len(reference)
    # Identical numbers: parameters, optimizer moments, RNG and data order all came back.
    for step, (a, b) in enumerate(zip(reference, resumed)):
        assert (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b, rel=1e-5, abs=1e-6), (step, reference,
                                                                                                 resumed)


def test_reward_model_training_resumes_with_its_loss(stack: ModelStack, tmp_path: Path) -> None:
    examples = preference_examples(24)
    cfg = RewardConfig(learning_rate=1e-3, epochs=2, batch_size=4, max_length=64, seed=3, ensemble=2)

    def train(checkpoint: Checkpoint | None, on_step: Callable | None) -> list[dict]:
        return train_reward_model(stack, examples[:18], examples[18:], cfg, on_step=on_step, progress=False,
                                  checkpoint=checkpoint).history

    reference, resumed, checkpoint = crash_then_resume(tmp_path, train, lambda: stack.reset_adapter("reward"),
                                                       crash_at=6, every=2, key="loss")
    assert len(reference) == 10  # 2 epochs of 5 batches: the checkpoint at step 4 is in the first, the rest after
    assert_continues(reference, resumed, checkpoint, at=4)


@pytest.mark.parametrize("algo", ["grpo", "ppo"])
def test_policy_training_resumes_with_its_loss(stack: ModelStack, tmp_path: Path, algo: str) -> None:
    cfg = PolicyConfig(learning_rate=1e-3, steps=5, prompts_per_step=2, group_size=2, max_new_tokens=6,
                       minibatch_size=4, update_epochs=1, kl_beta=0.05, kl_control="adaptive", seed=1)
    score = halves_score(stack)

    def fresh() -> None:
        stack.reset_adapter("policy")
        fresh_critic(stack)

    def train(checkpoint: Checkpoint | None, on_step: Callable | None) -> list[dict]:
        return train_policy(stack, PROMPTS, score, cfg, algo=algo, on_step=on_step, progress=False,
                            checkpoint=checkpoint).history

    key = "loss" if algo == "grpo" else "policy_loss"
    reference, resumed, checkpoint = crash_then_resume(tmp_path, train, fresh, crash_at=4, every=3, key=key)
    assert_continues(reference, resumed, checkpoint, at=3)


def test_dpo_resumes_with_its_loss(stack: ModelStack, tmp_path: Path) -> None:
    examples = DPOExamples([PreferenceExample(PROMPTS[i], f"yes, topic {i} is great", f"no {i}", None, i)
                            for i in range(6)], {"judgments": 6})
    cfg = PolicyConfig(dpo_epochs=2, dpo_batch_size=2, dpo_learning_rate=1e-3, prompts_per_step=2, group_size=2,
                       max_new_tokens=6, dpo_kl_every=2)

    def train(checkpoint: Checkpoint | None, on_step: Callable | None) -> list[dict]:
        return train_dpo(stack, examples, PROMPTS, None, cfg, on_step=on_step, progress=False,
                         checkpoint=checkpoint).history

    reference, resumed, checkpoint = crash_then_resume(tmp_path, train, lambda: stack.reset_adapter("policy"),
                                                       crash_at=5, every=2, key="dpo_loss")
    assert len(reference) == 6  # the checkpoint at step 4 is in the second epoch
    assert_continues(reference, resumed, checkpoint, at=4)


def test_sft_resumes_with_its_loss_and_its_epoch_figures(stack: ModelStack, tmp_path: Path) -> None:
    examples = [SFTExample([{"role": "user", "content": f"name fruit {i}"}], f"fruit number {i} is a pear", i)
                for i in range(10)]
    cfg = SFTConfig(learning_rate=5e-3, epochs=2, batch_size=2, max_length=48)
    results = []

    def train(checkpoint: Checkpoint | None, on_step: Callable | None) -> list[dict]:
        result = train_sft(stack, examples[:8], examples[8:], cfg, on_step=on_step, progress=False,
                           checkpoint=checkpoint)
        results.append(result)
        return result.history

    reference, resumed, checkpoint = crash_then_resume(tmp_path, train, lambda: stack.reset_adapter("policy"),
                                                       crash_at=4, every=3, key="train_nll")
    assert_continues(reference, resumed, checkpoint, at=3)
    # The epoch the crash cut in two still reports the whole epoch's NLL and held-out figure.
    first, last = results[0].summary, results[-1].summary
    for key in ("train_nll", "heldout_nll", "best_epoch", "steps"):
        assert first[key] == pytest.approx(last[key], rel=1e-5), key


def test_a_checkpoint_of_other_inputs_or_a_damaged_one_is_not_resumed(stack: ModelStack, tmp_path: Path) -> None:
    examples = preference_examples(12)
    cfg = RewardConfig(learning_rate=1e-3, epochs=1, batch_size=4, max_length=64, seed=3)
    path = tmp_path / "reward.pt"
    first = train_reward_model(stack, examples[:9], examples[9:], cfg, progress=False, checkpoint=Checkpoint(path, 1))
    assert path.is_file()
    other = Checkpoint(path, 1)
    train_reward_model(stack, examples[1:10], examples[10:], cfg, progress=False, checkpoint=other)
    assert other.resumed_from == 0  # other judgments: trained from the start
    changed = Checkpoint(path, 1, context={"judgments_until": 99})
    train_reward_model(stack, examples[1:10], examples[10:], cfg, progress=False, checkpoint=changed)
    assert changed.resumed_from == 0  # what the service fixed differs
    path.write_bytes(b"not a checkpoint")
    damaged = Checkpoint(path, 1)
    result = train_reward_model(stack, examples[1:10], examples[10:], cfg, progress=False, checkpoint=damaged)
    assert damaged.resumed_from == 0 and len(result.history) == len(first.history)
