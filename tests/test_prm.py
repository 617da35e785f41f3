"""The process reward model on a tiny model: its own adapter and step head added on demand (the other adapters and
torch's random state untouched), scores read at each step's end (a later step never changes an earlier step's
score), training that learns which steps are right and keeps the best epoch, min/product aggregation, save and load
through the service, the `train_prm` job with its refusal, and the PRM as a TRL-signature reward and a verifier."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch

import storage
from rlhf_core.config import Config, PRMConfig
from rlhf_core.loop.worker import Worker
from rlhf_core.models.process_reward import PRM
from rlhf_core.models.stack import LoraSettings, ModelStack
from rlhf_core.registry import JOB_KINDS, training_kinds
from rlhf_core.service.actor import ActionRefused, Actor
from rlhf_core.service.jobs import request_job
from rlhf_core.training.prm import StepExample, aggregate_steps, encode_steps, step_probabilities, train_prm
from rlhf_core.training.prm_service import NoStepLabelsError, PRMScorer, activate_prm, run_prm_training
from rlhf_core.workspace import Workspace

PROMPT = [{"role": "user", "content": "check these"}]


@pytest.fixture(autouse=True)
def _one_thread(one_thread) -> None:  # noqa: ANN001 - conftest's fixture
    """One torch thread (see conftest)."""


@pytest.fixture
def stack(tiny_model_dir: Path) -> ModelStack:
    return ModelStack.load(tiny_model_dir, device="cpu")


def marked_examples(n: int, seed: int = 0) -> list[StepExample]:
    """Responses of 3-4 steps; a step saying "wrong" is wrong, one saying "right" is right."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        labels = [rng.random() < 0.6 for _ in range(rng.randint(3, 4))]
        steps = [f"the {rng.choice(['model', 'river', 'cat'])} is {'right' if ok else 'wrong'}" for ok in labels]
        out.append(StepExample([{"role": "user", "content": f"check {i}"}], steps, [float(x) for x in labels], i))
    return out


def test_the_prm_adapter_is_added_on_demand_and_leaves_the_rest_alone(stack: ModelStack) -> None:
    before = {name: stack._adapter_state(name) for name in ("policy", "reward")}
    assert not stack.has_prm
    with pytest.raises(ValueError, match="unknown adapter 'prm'"):
        with stack.use(PRM):
            pass
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    stack.enable_prm(LoraSettings(r=4, alpha=8), seed=1)
    assert torch.equal(torch.rand(3), expected_next)  # torch's global random state is untouched
    assert stack.has_prm and PRM in stack.heads
    assert all(p.dtype == torch.float32 and not p.requires_grad
               for n, p in stack.model.named_parameters() if ".prm." in n)
    for name, state in before.items():
        assert all(torch.equal(state[k], v) for k, v in stack._adapter_state(name).items()), name
    trainable = stack.trainable_parameters(PRM)
    assert len(trainable) > 2 and all(p.requires_grad for p in trainable)
    stack.freeze_adapters()
    with stack.use("policy"):  # switching away and back keeps the flags ours
        pass
    assert not any(p.requires_grad for p in trainable)


def test_a_step_is_scored_at_its_end_from_what_came_before(stack: ModelStack) -> None:
    stack.enable_prm(LoraSettings(r=4, alpha=8))
    tok = stack.tokenizer
    encoded = encode_steps(tok, PROMPT, ["one step", "two steps"], [1.0, 0.0], max_length=128)
    assert tok.decode(encoded.ids[encoded.ends[0]:encoded.ends[0] + 1]) == "\n" and encoded.labels == [1.0, 0.0]
    a, b = step_probabilities(stack, [PROMPT, PROMPT], [["one step", "two steps", "three"], ["one step", "other"]],
                              max_length=128)
    assert len(a) == 3 and len(b) == 2 and all(0 < p < 1 for p in a)
    assert a[0] == pytest.approx(b[0], abs=1e-5)  # causal: a later step does not change an earlier score
    assert a[1] != pytest.approx(b[1], abs=1e-5)
    short = encode_steps(tok, PROMPT, ["x " * 40, "y"], None, max_length=len(encoded.ids) + 3)
    assert short.ends == [] or len(short.ends) < 2  # whole steps only, within max_length


def test_aggregation_is_the_weakest_step_or_all_of_them() -> None:
    assert aggregate_steps([0.9, 0.2, 0.8], "min") == pytest.approx(0.2)
    assert aggregate_steps([0.9, 0.5, 0.8], "product") == pytest.approx(0.36)
    assert aggregate_steps([], "min") is None
    with pytest.raises(ValueError, match="min or product"):
        aggregate_steps([0.5], "mean")


def test_training_learns_which_steps_are_right_and_keeps_the_best_epoch(stack: ModelStack) -> None:
    cfg = PRMConfig(learning_rate=3e-3, epochs=3, batch_size=8, max_length=96, eval_fraction=0.25)
    result = train_prm(stack, marked_examples(48), cfg, progress=False)
    assert result.heldout_steps > 20 and result.train_steps > 80
    assert result.heldout_accuracy >= 0.9 > result.heldout_majority
    assert result.history[0]["loss"] > result.history[-1]["loss"]
    assert sum("heldout_loss" in row for row in result.history) == cfg.epochs
    assert not any(p.requires_grad for n, p in stack.model.named_parameters() if ".prm." in n)  # frozen after
    probs = step_probabilities(stack, [PROMPT] * 2, [["the cat is right"], ["the cat is wrong"]], max_length=96)
    assert probs[0][0] > 0.5 > probs[1][0]


@pytest.fixture
def workspace(tmp_path: Path, tiny_model_dir: Path) -> Workspace:
    config = Config()
    config.model.name = str(tiny_model_dir)
    config.labeling.mode = "steps"
    config.prm = PRMConfig(learning_rate=3e-3, epochs=3, batch_size=8, max_length=96, eval_fraction=0.25)
    return Workspace(root=tmp_path / "ws", config=config)


def _label_marked_responses(db: storage.Database, n: int) -> None:
    """Sampled responses of marked steps, labeled through storage as the page stores them."""
    examples = marked_examples(n)
    storage.add_prompts(db, [ex.prompt_messages for ex in examples])
    by_text = {storage.prompt_messages(p)[0]["content"]: p.id for p in storage.list_prompts(db)}
    for ex in examples:
        storage.record_generations(db, prompt_id=by_text[ex.prompt_messages[0]["content"]], policy_version_id=0,
                                   responses=[("\n".join(ex.steps), 8), ("x", 1)], gen_params={}, pairs=[(0, 1)])
    user = storage.create_annotator(db, "labeler", "password123")
    truth = {"\n".join(ex.steps): ex for ex in examples}
    while (task := storage.next_step_task(db, user.id, sources=None)) is not None:
        ex = truth.get(task.text)
        if ex is None:
            storage.skip_step_task(db, user.id, task.sample_id)
            continue
        labels = ["good" if x else "bad" for x in ex.labels]
        storage.record_step_labels(db, user.id, task.sample_id, steps=ex.steps, labels=labels)


def test_the_service_trains_saves_and_loads_a_prm_that_scores_and_verifies(workspace, sqlite_db, stack) -> None:
    with pytest.raises(NoStepLabelsError, match="rlhf simulate-steps"):
        run_prm_training(workspace, sqlite_db, stack, progress=False)
    assert activate_prm(workspace, sqlite_db, stack) is None
    _label_marked_responses(sqlite_db, 48)
    version = run_prm_training(workspace, sqlite_db, stack, progress=False)
    assert version.id == 1 and (Path(version.adapter_path) / "adapter.safetensors").is_file()
    metrics = json.loads(version.metrics_json)
    assert metrics["heldout_step_accuracy"] >= 0.9 and metrics["labeled_responses"] == 48
    logs = storage.training_logs(sqlite_db, phase="prm")
    assert len(logs) == 3 * 5 and sum("heldout_accuracy" in row for row in logs) == 3  # 36 train responses / 8
    scorer = PRMScorer(workspace, stack)
    prompts = ["check", "check", [{"role": "user", "content": "check"}]]
    completions = ["the cat is right\nthe model is right", "the cat is right\nthe river is wrong",
                   [{"role": "assistant", "content": "   "}]]
    scores = scorer(prompts, completions)
    assert scores[0] > 0.5 > scores[1] and scores[2] is None  # no steps: "does not apply"
    assert scorer.verify(prompts, completions) == [True, False, False]

    fresh = ModelStack.load(Path(workspace.config.model.name), device="cpu")  # another process, in effect
    assert activate_prm(workspace, sqlite_db, fresh) == 1
    assert PRMScorer(workspace, fresh)(prompts, completions)[:2] == pytest.approx(scores[:2], abs=1e-5)


def test_train_prm_is_a_job_kind_with_its_refusal(workspace, sqlite_db, stack) -> None:
    assert "train_prm" in training_kinds() and JOB_KINDS["train_prm"].requested_by == ("cli", "operator")
    with pytest.raises(ActionRefused, match="No step labels yet"):
        request_job(workspace, sqlite_db, "train_prm", {}, Actor.shell())
    _label_marked_responses(sqlite_db, 16)
    job = request_job(workspace, sqlite_db, "train_prm", {}, Actor.shell())
    done = Worker(workspace, sqlite_db, stack_factory=lambda _ws: stack, poll_seconds=0.01).run_until_done(
        job.id, timeout=300)
    assert done.status == "done", done.error
    metrics = json.loads(done.metrics_json)
    assert metrics["prm_version"] == 1 and metrics["train_steps"] > 0
    assert {row["phase"] for row in storage.training_logs(sqlite_db, job_id=done.id)} == {"prm"}
