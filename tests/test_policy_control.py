"""Issue 12 on PPO/GRPO rounds (tiny model): the KL to the base beside a moving reference, the adaptive
KL coefficient inside a round and carried to the next, Dr. GRPO learning a synthetic reward, the
reward-length correlation of a rollout, and TensorBoard event files (and a clear error without
tensorboard)."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
import torch
from test_policy_training import LEARNING_SETUPS, direction_score, direction_scores, expected_first_token_score

import storage
from rlhf_core.algorithms import adaptive_kl_beta
from rlhf_core.config import Config, ConfigError, PolicyConfig, load_config
from rlhf_core.models.stack import ModelStack
from rlhf_core.training.policy import run_policy_training, starting_kl_beta, train_policy
from rlhf_core.training.rollout import generate_rollout, rollout_logprobs, rollout_metrics
from rlhf_core.training.run_log import TENSORBOARD_MISSING, StepLog, record_training_steps
from rlhf_core.workspace import Workspace

PROMPTS = [[{"role": "user", "content": f"tell me about topic {i}"}] for i in range(16)]


@pytest.fixture(autouse=True)
def _one_thread(one_thread) -> None:  # noqa: ANN001 - conftest's fixture
    """Every test here runs with one torch thread."""


@pytest.fixture
def stack(tiny_model_dir: Path) -> ModelStack:
    return ModelStack.load(tiny_model_dir, device="cpu")


@pytest.fixture
def workspace(tmp_path: Path, tiny_model_dir: Path, sqlite_db: storage.Database, stack: ModelStack) -> Workspace:
    config = Config()
    config.model.name = str(tiny_model_dir)
    config.policy = PolicyConfig(learning_rate=1e-3, steps=2, prompts_per_step=2, group_size=2, max_new_tokens=6,
                                 minibatch_size=4, update_epochs=1)
    storage.add_prompts(sqlite_db, PROMPTS[:3], split="train")
    ws = Workspace(root=tmp_path / "ws", config=config)
    rm_dir = stack.save_adapter("reward", ws.root / "adapters" / "reward-v0001")
    storage.add_reward_model_version(sqlite_db, adapter_path=str(rm_dir), trained_on=0, heldout_accuracy=None,
                                     heldout_loss=None, metrics={})
    return ws


def test_kl_to_the_base_is_logged_beside_a_moving_reference(workspace, sqlite_db, stack) -> None:
    workspace.config.policy.reference = "previous"
    v1 = run_policy_training(workspace, sqlite_db, stack, algo="grpo", progress=False)
    run_policy_training(workspace, sqlite_db, stack, algo="grpo", progress=False)
    logs = storage.training_logs(sqlite_db, phase="policy")
    # Round 1: the reference is the base, so both KLs are one number.
    assert all(row["kl_base_per_token"] == row["kl_per_token"] for row in logs[:2])
    # Round 2 starts at v1, its reference: no KL to the reference, but round 1's drift from the base remains.
    assert logs[2]["kl_per_token"] == 0.0 and logs[2]["kl_k3_per_token"] == 0.0
    assert logs[2]["kl_base_k3_per_token"] > 0.0
    assert json.loads(v1.metrics_json)["kl_base_per_token"] is not None


def test_adaptive_kl_coefficient_follows_the_controller_and_carries_to_the_next_round(stack, sqlite_db) -> None:
    cfg = PolicyConfig(learning_rate=1e-3, steps=3, prompts_per_step=2, group_size=2, max_new_tokens=6,
                       minibatch_size=4, update_epochs=1, kl_beta=0.05, kl_control="adaptive", target_kl=1e-4,
                       kl_horizon=8)
    result = train_policy(stack, PROMPTS, direction_score(stack), cfg, algo="grpo", progress=False)
    rows = result.history
    assert rows[0]["kl_beta"] == 0.05
    for before, after in zip(rows, rows[1:]):  # each step's KL sets the next step's β (±10% at most here)
        assert after["kl_beta"] == pytest.approx(adaptive_kl_beta(before["kl_beta"], before["kl_k3_per_token"],
                                                                  1e-4, before["samples"], 8))
    assert rows[1]["kl_beta"] == pytest.approx(0.05 * 0.9)  # step 0 is at the base: KL 0, far under target
    assert rows[2]["kl_beta"] > rows[1]["kl_beta"]  # after an update the KL is over the tiny target
    assert result.summary["kl_beta"] == pytest.approx(
        adaptive_kl_beta(rows[-1]["kl_beta"], rows[-1]["kl_k3_per_token"], 1e-4, rows[-1]["samples"], 8))

    version = storage.add_policy_version(sqlite_db, parent_id=0, adapter_path="/v1", algorithm="grpo", round=1,
                                         metrics=result.summary)
    assert starting_kl_beta(cfg, version) == result.summary["kl_beta"]
    assert starting_kl_beta(PolicyConfig(kl_beta=0.05), version) == 0.05  # fixed: the configured value


def test_fixed_kl_coefficient_stays_put(stack) -> None:
    cfg = PolicyConfig(learning_rate=1e-3, steps=2, prompts_per_step=2, group_size=2, max_new_tokens=6,
                       minibatch_size=4, update_epochs=1, kl_beta=0.07)
    result = train_policy(stack, PROMPTS, direction_score(stack), cfg, algo="grpo", progress=False)
    assert [row["kl_beta"] for row in result.history] == [0.07, 0.07] and result.summary["kl_beta"] == 0.07


def test_dr_grpo_learns_a_synthetic_reward_with_bounded_kl(stack: ModelStack) -> None:
    scores = direction_scores(stack)
    cfg = PolicyConfig(learning_rate=1e-3, steps=10, max_new_tokens=8, minibatch_size=8, kl_beta=0.05, seed=0,
                       loss_type="dr_grpo", **LEARNING_SETUPS["grpo"])
    before = expected_first_token_score(stack, scores)
    history = train_policy(stack, PROMPTS, direction_score(stack, scores), cfg, algo="grpo", progress=False).history
    after = expected_first_token_score(stack, scores)
    assert after > before + 0.1, (before, after)
    assert max(row["kl_per_token"] for row in history) < 0.5 * math.log(2)


def test_rollout_metrics_correlate_reward_with_length(stack: ModelStack, monkeypatch) -> None:
    eos = stack.tokenizer.eos_token_id
    monkeypatch.setattr(stack, "sample", lambda prompts, params, **kw: [[40, eos], [41, 42, 43, 44], [45, 46, eos],
                                                                        [47, eos]][:len(prompts)])
    rollout = generate_rollout(stack, PROMPTS[:2], samples_per_prompt=2, max_new_tokens=4, temperature=1.0)
    lp = rollout_logprobs(stack, rollout)
    lengths = rollout.response_lengths.float()  # 2, 4, 3, 2
    assert rollout_metrics(rollout, lp, lengths * 0.5 + 1)["reward_length_corr"] == pytest.approx(1.0)
    assert rollout_metrics(rollout, lp, -lengths)["reward_length_corr"] == pytest.approx(-1.0)
    assert rollout_metrics(rollout, lp, torch.ones(4))["reward_length_corr"] is None  # constant: undefined
    assert "reward_mean" not in rollout_metrics(rollout, lp, None)


def scalars(directory: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(directory))
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def test_training_steps_go_to_tensorboard_when_asked(workspace, sqlite_db, stack) -> None:
    pytest.importorskip("tensorboard", reason="pip install 'rlhf-loop[tensorboard]'")
    workspace.config.logging.report_to = "tensorboard"
    run_policy_training(workspace, sqlite_db, stack, algo="grpo", progress=False)
    record_training_steps(workspace, sqlite_db, phase="reward", rows=[{"step": 1, "loss": 0.7, "accuracy": None},
                                                                      {"step": 2, "loss": 0.5, "accuracy": 0.75}],
                          job_id=None, run="reward-v0001")
    runs = sorted((workspace.root / "runs").iterdir())
    assert [r.name.rsplit("-", 1)[0] for r in runs] == ["policy-v0001-grpo", "reward-v0001"]
    policy, reward = scalars(runs[0]), scalars(runs[1])
    logged = storage.training_logs(sqlite_db, phase="policy")
    assert policy["policy/kl_per_token"] == [(row["step"], pytest.approx(row["kl_per_token"])) for row in logged]
    assert {"policy/reward_mean", "policy/kl_beta", "policy/clip_fraction"} <= policy.keys()
    assert reward["reward/loss"] == [(1, pytest.approx(0.7)), (2, pytest.approx(0.5))]
    assert reward["reward/accuracy"] == [(2, 0.75)]  # an undefined value is left out, not written as 0
    assert [row["loss"] for row in storage.training_logs(sqlite_db, phase="reward")] == [0.7, 0.5]


def test_no_tensorboard_events_by_default(workspace, sqlite_db, stack) -> None:
    run_policy_training(workspace, sqlite_db, stack, algo="grpo", progress=False)
    assert not (workspace.root / "runs").exists()


def test_missing_tensorboard_is_one_clear_line(tmp_path: Path, monkeypatch, workspace) -> None:
    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "tensorboard" else real_find_spec(name, *a))
    path = tmp_path / "rlhf.toml"
    path.write_text('[logging]\nreport_to = "tensorboard"\n')
    with pytest.raises(ConfigError, match=r"rlhf\.toml: logging\.report_to = \"tensorboard\" needs the tensorboard "
                                          r"package: pip install 'rlhf-loop\[tensorboard\]'"):
        load_config(path)

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # the import itself fails
    workspace.config.logging.report_to = "tensorboard"
    with pytest.raises(ValueError) as error:
        StepLog(workspace, "policy", "policy-v0001-grpo")
    assert str(error.value) == TENSORBOARD_MISSING and "\n" not in TENSORBOARD_MISSING
