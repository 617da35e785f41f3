"""The policy gate (`loop.min_reward_confidence`, rlhf_core.loop.rounds.policy_gate): a round moves the policy only
on a reward model whose held-out accuracy is measurably better than chance (95% Wilson lower bound). A reward
model trained on labels flipped on purpose (held-out judgments honest) closes it: the round records why, keeps
the policy, samples the next pairs from it, and the operator page says so; honest labels open it."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from test_reward_training import MARKER, WORDS

import storage
from labeling_app.operator.rounds import rounds_values
from rlhf_core.config import Config, ConfigError, validate
from rlhf_core.loop.rounds import policy_gate, run_round
from rlhf_core.service.dashboard import policy_gate_note, rounds_table
from rlhf_core.training.reward_data import PreferenceExample, split_by_prompt
from rlhf_core.training.workspace_stack import load_stack
from rlhf_core.workspace import init_workspace


def version(accuracy: float | None, decisive: int) -> storage.RewardModelVersion:
    return storage.RewardModelVersion(id=3, adapter_path="/nowhere", heldout_accuracy=accuracy,
                                      metrics_json=json.dumps({"heldout_decisive": decisive}))


def test_gate_by_the_wilson_lower_bound():
    # 31 of 50 (62%): the 95% Wilson interval starts at 48.2%, not above chance; 36 of 50 (72%): 58.3%.
    closed = policy_gate(version(0.62, 50), 0.5)
    assert not closed.open and closed.lower_bound == pytest.approx(0.4815, abs=1e-4)
    assert closed.reason == ("reward model v3: held-out accuracy 31/50 = 62%, 95% lower bound 48%, not above 50% "
                             "(loop.min_reward_confidence)")
    opened = policy_gate(version(0.72, 50), 0.5)
    assert opened.open and opened.lower_bound == pytest.approx(0.5833, abs=1e-4)
    assert not policy_gate(version(0.72, 50), 0.6).open  # a stricter bar
    assert policy_gate(version(0.2, 50), 0.0).open  # 0: no gate
    assert "no decisive held-out judgment" in policy_gate(version(None, 0), 0.5).reason


def test_the_gate_needs_held_out_judgments():
    config = Config()
    config.reward.eval_fraction = 0.0
    with pytest.raises(ConfigError, match="loop.min_reward_confidence needs held-out judgments"):
        validate(config)
    config.loop.min_reward_confidence = 0.0
    validate(config)


def judged_workspace(tmp_path: Path, tiny_model_dir: Path, tiny_rounds, *, flip_training: bool):  # noqa: ANN001
    """40 prompts, one marker-vs-salad pair each, judged once: the held-out prompts' pairs honestly, the training
    prompts' pairs flipped on purpose when `flip_training`. The gate is at its default."""
    ws, _ = init_workspace(tmp_path / ("flipped" if flip_training else "honest"), model=str(tiny_model_dir))
    tiny_rounds(ws.config)
    ws.config.loop.min_reward_confidence = 0.5
    cfg = ws.config.reward
    cfg.learning_rate, cfg.epochs, cfg.batch_size, cfg.max_length, cfg.eval_fraction = 1e-3, 4, 8, 128, 0.4
    db = ws.database()
    rng = random.Random(0)
    storage.add_prompts(db, [[{"role": "user", "content": f"question number {i}"}] for i in range(40)])
    annotator = storage.create_annotator(db, "ann", "password123").id
    prompts = storage.list_prompts(db)
    probe = [PreferenceExample([], "x", "y", None, p.id) for p in prompts]
    _, held = split_by_prompt(probe, cfg.eval_fraction, cfg.seed)  # the service splits the same way
    heldout_prompts = {e.prompt_id for e in held}
    for prompt in prompts:
        good = " ".join(rng.choice(WORDS) for _ in range(6)) + f" {MARKER}"
        bad = " ".join(rng.choice(WORDS) for _ in range(7))
        (pair,) = storage.record_generations(db, prompt_id=prompt.id, policy_version_id=0,
                                             responses=[(good, 8), (bad, 7)], gen_params={}, pairs=[(0, 1)])
        flip = flip_training and prompt.id not in heldout_prompts
        storage.record_judgment(db, pair_id=pair.id, annotator_id=annotator, choice="b" if flip else "a",
                                require_served=False)
    return ws, db


def test_a_reward_model_trained_on_flipped_labels_does_not_move_the_policy(tmp_path, tiny_model_dir, tiny_rounds):
    ws, db = judged_workspace(tmp_path, tiny_model_dir, tiny_rounds, flip_training=True)
    stack = load_stack(ws)
    pairs_before = storage.status_counts(db)["counts"]["pairs"]
    result = run_round(ws, db, stack, progress=False)

    rm = storage.current_reward_model(db)
    assert rm.heldout_accuracy < 0.5  # it learned the flipped preference: worse than chance on honest labels
    assert storage.current_policy(db).id == 0 and result.policy_version == 0  # the policy stayed
    gate = json.loads(rm.metrics_json)["policy_gate"]
    assert gate["open"] is False and gate["lower_bound"] < 0.5 and gate["reason"].startswith(f"reward model v{rm.id}")
    assert result.metrics["policy_updated"] is False and result.metrics["policy_gate"] == gate["reason"]
    # The next pairs come from the same policy, so annotators go on judging.
    assert result.new_pairs > 0 and storage.status_counts(db)["counts"]["pairs"] == pairs_before + result.new_pairs
    with db.session() as s:
        versions = {row.policy_version_id for row in s.exec(storage.Sample.__table__.select())}
    assert versions == {0}
    # The operator page says so above the rounds table.
    note = policy_gate_note(db)
    assert note.startswith("The last round did not update the policy: reward model v1: cross-fitted accuracy")
    assert rounds_values(rounds_table(db), note)[1].startswith(f"**{note}**")
    db.dispose()


def test_honest_labels_open_the_gate(tmp_path, tiny_model_dir, tiny_rounds):
    ws, db = judged_workspace(tmp_path, tiny_model_dir, tiny_rounds, flip_training=False)
    result = run_round(ws, db, load_stack(ws), sample_next=False, progress=False)
    rm = storage.current_reward_model(db)
    gate = json.loads(rm.metrics_json)["policy_gate"]
    assert gate["open"] is True and gate["lower_bound"] > 0.5
    assert result.policy_version == 1 and storage.current_policy(db).id == 1
    assert policy_gate_note(db) is None
    db.dispose()
