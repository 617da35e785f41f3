"""Online DPO (issue 12): which judgments a round trains on, reward-ranked pairs, a DPO round on the tiny
model that moves the policy's log-prob margin the judged way, a moving reference with the KL to the base
alongside, and a whole DPO round through the job worker with its curves on the operator page."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from test_annotator_quality import build_example

import storage
from labeling_app.operator.rounds import curve_values, rounds_values, step_charts
from rlhf_core.algorithms.dpo import sequence_logprobs
from rlhf_core.config import Config, PolicyConfig
from rlhf_core.loop.sampling import sample_pairs
from rlhf_core.loop.worker import Worker
from rlhf_core.models.batching import prompt_token_ids
from rlhf_core.models.stack import ModelStack
from rlhf_core.service.dashboard import rounds_table
from rlhf_core.simulator.simulate import simulate_annotators
from rlhf_core.training.dpo import DPOExamples, dpo_examples, reward_ranked_pairs, train_dpo
from rlhf_core.training.policy import run_policy_training
from rlhf_core.training.reward_data import PreferenceExample, encode_pairs, pair_batch
from rlhf_core.training.rollout import Rollout
from rlhf_core.workspace import Workspace, init_workspace

PROMPTS = [[{"role": "user", "content": f"tell me about topic {i}"}] for i in range(12)]


@pytest.fixture(autouse=True)
def _one_thread(one_thread) -> None:  # noqa: ANN001 - conftest's fixture
    """Every test here runs with one torch thread."""


def judged(db: storage.Database, round_: int, choices: list[str], annotator: int) -> None:
    """One pair per choice, sampled in round `round_`, judged `choice` by `annotator`."""
    for i, choice in enumerate(choices):
        storage.add_prompts(db, [[{"role": "user", "content": f"round {round_} prompt {i}"}]])
        prompt = storage.list_prompts(db)[-1]
        a, b = storage.add_samples(db, prompt_id=prompt.id, policy_version_id=round_,
                                   responses=[(f"answer a{i}", 2), (f"answer b{i}", 2)], gen_params={})
        pair = storage.add_pair_between(db, prompt_id=prompt.id, sample_a_id=a, sample_b_id=b, round=round_,
                                        judgments_wanted=1)
        storage.record_judgment(db, pair_id=pair.id, annotator_id=annotator, choice=choice, require_served=False)


def test_dpo_trains_on_this_rounds_decisive_judgments(db: storage.Database) -> None:
    judge = storage.create_annotator(db, "judge", "password123")
    v1 = storage.add_policy_version(db, parent_id=0, adapter_path="/v1", algorithm="dpo", round=1, metrics={})
    judged(db, 0, ["a", "b", "tie", "both_bad"], judge.id)
    judged(db, 1, ["a", "a", "b"], judge.id)
    cfg = PolicyConfig()

    this_round = dpo_examples(db, v1, cfg)
    assert len(this_round.examples) == 3 and this_round.stats["ties_excluded"] == 0
    assert {ex.chosen for ex in this_round.examples} == {"answer a0", "answer a1", "answer b2"}
    first = dpo_examples(db, storage.get_policy(db, 0), cfg)
    assert [ex.chosen for ex in first.examples] == ["answer a0", "answer b1"]
    assert (first.stats["ties_excluded"], first.stats["both_bad_excluded"]) == (1, 1)
    both = dpo_examples(db, v1, PolicyConfig(dpo_past_rounds=1))
    assert len(both.examples) == 5 and both.stats["judgments"] == 7

    v2 = storage.add_policy_version(db, parent_id=1, adapter_path="/v2", algorithm="dpo", round=2, metrics={})
    with pytest.raises(ValueError, match=r"no decisive \(a/b\) judgments of pairs sampled from policy v2.*"
                                         r"policy.dpo_rm_pairs"):
        dpo_examples(db, v2, cfg)
    assert dpo_examples(db, v2, PolicyConfig(dpo_rm_pairs=4)).examples == []  # reward-model pairs will do


def test_dpo_leaves_out_annotators_below_the_minimum_control_accuracy(db: storage.Database) -> None:
    build_example(db)  # ann 4 of 5 right on control pairs, bea 1 of 2, cy none; 10 decisive judgments, 1 tie
    base = storage.get_policy(db, 0)
    every = dpo_examples(db, base, PolicyConfig())
    assert len(every.examples) == 10 and every.stats["annotators_left_out"] == 0
    kept = dpo_examples(db, base, PolicyConfig(), min_annotator_accuracy=0.6)  # as reward.min_annotator_accuracy
    assert len(kept.examples) == 6 and kept.stats["annotators_left_out"] == 1  # bea's four are left out


@pytest.fixture
def stack(tiny_model_dir: Path) -> ModelStack:
    return ModelStack.load(tiny_model_dir, device="cpu")


def test_reward_ranked_pairs_put_the_best_sample_over_the_worst(stack: ModelStack) -> None:
    seen: list[Rollout] = []

    def token_sum(rollout: Rollout) -> torch.Tensor:  # a score with no ties between distinct samples
        seen.append(rollout)
        return torch.tensor([float(sum(ids)) for ids in rollout.response_ids])

    torch.manual_seed(0)
    cfg = PolicyConfig(group_size=4, max_new_tokens=6)
    pairs, skipped = reward_ranked_pairs(stack, PROMPTS[:3], token_sum, cfg)
    assert (len(pairs), skipped) == (3, 0)
    (rollout,) = seen
    for group, pair in enumerate(pairs):
        samples = rollout.response_ids[4 * group:4 * group + 4]  # one prompt's four fresh samples
        assert pair.prompt == prompt_token_ids(stack.tokenizer, PROMPTS[group])
        assert pair.chosen == max(samples, key=sum) and pair.rejected == min(samples, key=sum)


@pytest.fixture
def workspace(tmp_path: Path, tiny_model_dir: Path, sqlite_db: storage.Database, tiny_rounds) -> Workspace:
    config = Config()
    config.model.name = str(tiny_model_dir)
    tiny_rounds(config)
    config.policy.dpo_learning_rate = 1e-3
    config.policy.dpo_batch_size = 4
    storage.add_prompts(sqlite_db, PROMPTS, split="train")
    return Workspace(root=tmp_path / "ws", config=config)


def margins(stack: ModelStack, examples: list[PreferenceExample]) -> torch.Tensor:
    """log π(chosen) − log π(rejected) of the policy adapter on each judged pair: [N] nats."""
    batch, _ = pair_batch(encode_pairs(stack.tokenizer, examples, 512), stack.tokenizer.pad_token_id,
                          with_margin=False)
    with torch.no_grad(), stack.use("policy"):
        logp, _ = stack.token_logprobs(batch.input_ids, batch.attention_mask, response_mask=batch.response_mask)
    seq = sequence_logprobs(logp, batch.response_mask)
    return seq[:len(examples)] - seq[len(examples):]


def test_packed_pair_logprobs_equal_separate_sequences_with_gradients(stack: ModelStack) -> None:
    """Each pair's prompt once with both responses packed behind it (a response shared by two pairs once):
    the same whole-response log-probs as the 2B separate prompt + response sequences, and the same gradient."""
    from rlhf_core.training.dpo import pair_logprobs

    texts = ["short", "a somewhat longer answer here", "river " * 7, "banana split"]
    examples = [PreferenceExample(PROMPTS[p], texts[a], texts[b], None, p)
                for p, a, b in ((0, 0, 1), (0, 1, 2), (1, 3, 0), (2, 2, 3), (2, 1, 0))]
    pairs = encode_pairs(stack.tokenizer, examples, 512)
    with torch.no_grad():  # a non-zero policy delta, so the adapter's gradient path is exercised
        for name, p in stack.model.named_parameters():
            if ".policy." in name and "lora_B" in name:
                p.normal_(0, 0.05)
    params = stack.trainable_parameters("policy")
    stack.model.train()
    grads = []
    with stack.use("policy"):
        batch, _ = pair_batch(pairs, stack.tokenizer.pad_token_id, with_margin=False)
        logp, _ = stack.token_logprobs(batch.input_ids, batch.attention_mask, response_mask=batch.response_mask)
        separate = sequence_logprobs(logp, batch.response_mask)
        chosen, rejected = pair_logprobs(stack, pairs)
        for value in (separate[:5] - separate[5:], chosen - rejected):
            grads.append(torch.autograd.grad(value.sum(), params))
    torch.testing.assert_close(chosen, separate[:5], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(rejected, separate[5:], atol=1e-4, rtol=1e-4)
    assert bool((chosen < 0).all()) and bool((chosen != rejected).all())
    for packed_grad, separate_grad in zip(grads[1], grads[0], strict=True):
        torch.testing.assert_close(packed_grad, separate_grad, atol=1e-4, rtol=1e-3)
    assert any(float(g.abs().sum()) > 0 for g in grads[1])
    stack.freeze_adapters()


def test_dpo_round_moves_the_policy_margin_towards_the_judgments(workspace, sqlite_db, stack) -> None:
    db = sqlite_db
    sample_pairs(workspace, db, stack, n_pairs=12, progress=False)
    simulate_annotators(db, annotators=2, judgments=12, gold="longer", seed=1, progress=False)
    examples = dpo_examples(db, storage.current_policy(db), workspace.config.policy).examples
    assert len(examples) >= 8
    before = margins(stack, examples)  # the policy adapter is the base here (v0)

    v1 = run_policy_training(workspace, db, stack, algo="dpo", progress=False)  # no reward model needed
    after = margins(stack, examples)
    assert (v1.algorithm, v1.round) == ("dpo", 1)
    # Two epochs at lr 1e-3 moved the mean margin by +1.6 nats, 10 of 11 pairs up (when written).
    assert float((after - before).mean()) > 0.5, (before, after)
    assert float((after > before).float().mean()) >= 0.75

    logs = storage.training_logs(db, phase="policy")
    assert logs[0]["dpo_loss"] == pytest.approx(math.log(2), abs=1e-4)  # π = π_ref before the first update
    assert logs[-1]["reward_accuracy"] >= 0.5 and logs[-1]["reward_margin"] > 0
    measured = [row for row in logs if row["heldout_kl_per_token"] is not None]
    assert [row["step"] for row in measured] == [*range(0, len(logs) - 1, 4), len(logs) - 1]  # dpo_kl_every = 4
    assert all(row["heldout_kl_per_token"] >= 0 and row["heldout_kl_base_per_token"] == row["heldout_kl_per_token"]
               for row in measured)  # the reference is the base here
    assert measured[-1]["heldout_kl_per_token"] > measured[0]["heldout_kl_per_token"]
    metrics = json.loads(v1.metrics_json)
    assert metrics["pairs_human"] == len(examples) and metrics["pairs_rm"] == 0
    assert metrics["steps"] == len(logs) == 2 * math.ceil(len(examples) / 4)
    for key in ("dpo_loss", "reward_accuracy", "heldout_kl_per_token", "kl_per_token", "kl_base_per_token",
                "entropy", "response_length"):
        assert metrics.get(key) is not None, key
    assert "reward_mean" not in metrics  # no reward model: no reward figures


def test_dpo_with_reward_model_pairs_and_the_previous_version_as_reference(workspace, sqlite_db, stack) -> None:
    db = sqlite_db
    rm_dir = stack.save_adapter("reward", workspace.root / "adapters" / "reward-v0001")
    storage.add_reward_model_version(db, adapter_path=str(rm_dir), trained_on=0, heldout_accuracy=None,
                                     heldout_loss=None, metrics={})
    cfg = workspace.config.policy
    cfg.reference, cfg.dpo_rm_pairs, cfg.group_size, cfg.prompts_per_step = "previous", 4, 3, 2
    run_policy_training(workspace, db, stack, algo="dpo", progress=False)
    v2 = run_policy_training(workspace, db, stack, algo="dpo", progress=False)
    assert stack.reference_path == Path(storage.get_policy(db, 1).adapter_path)

    metrics = json.loads(v2.metrics_json)
    assert metrics["pairs_human"] == 0 and 1 <= metrics["pairs_rm"] <= 4
    assert metrics["reward_mean"] is not None  # the reward model scores the samples after training
    round2 = [row for row in storage.training_logs(db, phase="policy")][-metrics["steps"]:]
    assert round2[0]["dpo_loss"] == pytest.approx(math.log(2), abs=1e-4)  # the reference moved to v1
    # One update away from v1, but v1 itself is round 1's update away from the base.
    assert round2[0]["heldout_kl_base_per_token"] > round2[0]["heldout_kl_per_token"]
    assert metrics["kl_base_k3_per_token"] > metrics["kl_k3_per_token"]


def test_dpo_round_through_the_worker_and_its_curves(tmp_path: Path, tiny_model_dir: Path, tiny_rounds) -> None:
    ws, _ = init_workspace(tmp_path / "ws", model=str(tiny_model_dir))
    tiny_rounds(ws.config)
    ws.config.reward.batch_size = 4  # at least two reward-model steps (a curve) from the ~8 decisive judgments
    db = ws.database()
    try:
        storage.add_prompts(db, PROMPTS)
        worker = Worker(ws, db, poll_seconds=0.01)
        assert worker.run_until_done(storage.enqueue_job(db, "sample", {"pairs": 12}).id, timeout=300).status == "done"
        simulate_annotators(db, annotators=2, judgments=12, gold="longer", seed=1, progress=False)
        job = storage.enqueue_job(db, "round", {"algo": "dpo"})
        done = worker.run_until_done(job.id, timeout=600)
        assert done.status == "done", done.error

        policy = storage.get_policy(db, 1)
        metrics = json.loads(policy.metrics_json)
        assert policy.algorithm == "dpo"
        for key in ("rm_heldout_accuracy", "reward_mean", "dpo_loss", "reward_accuracy", "kl_per_token",
                    "kl_base_per_token", "response_length"):
            assert metrics.get(key) is not None, key
        assert {row["phase"] for row in storage.training_logs(db, job_id=job.id)} == {"reward", "policy"}

        table, *_ = rounds_values(rounds_table(db))
        assert table[0][:2] == ["v1", "dpo"] and table[0][6] != "—"  # KL to the base, next to KL/token
        dropdown, *plots, note = curve_values(db, None)
        assert dropdown.value == job.id
        shown = {chart.key for (_, chart), plot in zip(step_charts(), plots, strict=True) if plot.visible}
        assert shown >= {"dpo_loss", "reward_margin", "reward_accuracy", "heldout_kl_per_token", "loss"}
        assert not shown & {"reward_mean", "response_length"}  # PPO/GRPO curves stay hidden for DPO
        assert "mean reward" not in note
    finally:
        db.dispose()


def test_dpo_steps_on_a_4bit_base(tiny_model_dir: Path) -> None:
    stack = ModelStack.load(tiny_model_dir, device="cpu", quantize_4bit=True)
    examples = DPOExamples([PreferenceExample(PROMPTS[i], f"yes, topic {i} is great", f"no {i}", None, i)
                            for i in range(4)], {"judgments": 4, "decisive": 4, "ties_excluded": 0,
                                                 "both_bad_excluded": 0})
    cfg = PolicyConfig(dpo_epochs=1, dpo_batch_size=2, dpo_learning_rate=1e-3, prompts_per_step=2, group_size=2,
                       max_new_tokens=6, dpo_label_smoothing=0.1)
    result = train_dpo(stack, examples, PROMPTS, None, cfg, progress=False)
    assert len(result.history) == 2 and result.history[0]["grad_norm_policy"] > 0
    assert all(math.isfinite(v) for row in result.history for v in row.values() if isinstance(v, float))
    assert result.history[1]["heldout_kl_per_token"] > 0  # the policy moved off the base
    assert result.summary["pairs_human"] == 4 and result.summary["kl_per_token"] is not None


def test_dpo_stops_once_the_held_out_kl_passes_the_budget(stack: ModelStack) -> None:
    examples = DPOExamples([PreferenceExample(PROMPTS[i], f"yes, topic {i} is great", f"no {i}", None, i)
                            for i in range(8)], {"judgments": 8})
    cfg = PolicyConfig(dpo_epochs=2, dpo_batch_size=2, dpo_learning_rate=1e-3, prompts_per_step=2, group_size=2,
                       max_new_tokens=6, max_kl_per_token=1e-9, dpo_kl_every=1)
    result = train_dpo(stack, examples, PROMPTS, None, cfg, progress=False)
    (row,) = result.history  # the first update already moved the policy past a budget of 1e-9 nats/token
    assert row["kl_stop"] == 1.0 and row["heldout_kl_per_token"] > 1e-9
    assert result.summary["stopped_at_kl"] == 1.0 and result.summary["steps"] == 1

