"""Simulated step labels and their export: the arithmetic step gold against hand-made steps, worked chains with
errors, simulated annotators labeling stored responses through the page's storage path, and `rlhf export --what
steps` in TRL's stepwise-supervision format, loaded back by `datasets` (a saved dataset and JSON Lines)."""

from __future__ import annotations

import random
from pathlib import Path

import datasets
import pytest

import storage
from rlhf_core.config import Config
from rlhf_core.service.actor import ActionRefused, Actor
from rlhf_core.service.exports import export_dataset
from rlhf_core.simulator.simulate import SimulationError
from rlhf_core.simulator.steps import (
    arithmetic_problem,
    arithmetic_step_labels,
    equation_checks,
    simulate_step_labels,
    worked_chain,
)
from rlhf_core.workspace import Workspace


def test_the_arithmetic_gold_checks_each_equation_of_a_step() -> None:
    assert equation_checks("3 + 4 = 7, and 7 x 2 = 14") == [True, True]
    assert equation_checks("12 - 5 = 8") == [False]
    assert equation_checks("(no numbers) so = 3") == []
    assert arithmetic_step_labels([], ["3 + 4 = 7", "7 * 2 = 15", "Answer: 15", "2 × 3 = 6 but 6 / 4 = 2"]) == [
        "good", "bad", "neutral", "bad"]


def test_worked_chains_are_right_or_wrong_step_by_step() -> None:
    rng = random.Random(3)
    problem = arithmetic_problem(rng)
    right = worked_chain(problem, rng, error_rate=0.0)
    assert right[-1] == f"Answer: {problem.answer}" and len(right) == len(problem.operators) + 1
    assert arithmetic_step_labels([], right) == ["good"] * len(problem.operators) + ["neutral"]
    wrong = worked_chain(problem, rng, error_rate=1.0)
    assert arithmetic_step_labels([], wrong)[:-1] == ["bad"] * len(problem.operators)


def _chains(db: storage.Database, n: int, source: str = "arith.jsonl", seed: int = 0) -> None:
    rng = random.Random(seed)
    problems = [arithmetic_problem(rng) for _ in range(n)]
    storage.add_prompts(db, [[{"role": "user", "content": p.question}] for p in problems], source=source)
    ids = {storage.prompt_messages(p)[0]["content"]: p.id for p in storage.list_prompts(db)}
    for p in problems:
        texts = ["\n".join(worked_chain(p, rng, error_rate)) for error_rate in (0.0, 0.6)]
        storage.record_generations(db, prompt_id=ids[p.question], policy_version_id=0,
                                   responses=[(t, 20) for t in texts], gen_params={}, pairs=[(0, 1)])


@pytest.fixture
def workspace(tmp_path: Path) -> Workspace:
    config = Config()
    config.labeling.step_sets = ["arith.jsonl"]
    return Workspace(root=tmp_path / "ws", config=config)


def test_simulated_annotators_label_the_step_tasks_and_the_export_loads_in_datasets(db, workspace, tmp_path) -> None:
    _chains(db, 10)
    _chains(db, 2, source="other.jsonl", seed=1)  # not a step set: never labeled
    result = simulate_step_labels(db, workspace.config, labels=100, annotators=2)
    assert result.labels == 20 and result.stopped == "no responses left"
    assert sum(result.per_annotator.values()) == 20 and result.bad > 0 and result.flipped == 0
    rows = storage.step_label_rows(db)
    assert {r.prompt_source for r in rows} == {"arith.jsonl"}
    assert all(r.labels == arithmetic_step_labels([], r.steps) for r in rows)

    out = tmp_path / "steps-hf"
    outcome = export_dataset(workspace, db, "steps", out, Actor.shell(), fmt="hf", test_fraction=0.2)
    assert outcome.rows == 20 and "stepwise-supervision" in outcome.summary
    ds = datasets.load_from_disk(str(out))
    assert set(ds) == {"train", "test"} and len(ds["train"]) + len(ds["test"]) == 20
    row = ds["train"][0]
    assert isinstance(row["prompt"], str) and row["prompt"].startswith("Start at")
    assert len(row["completions"]) == len(row["labels"]) and all(isinstance(x, bool) for x in row["labels"])
    by_id = {r.id: r for r in rows}
    for exported in (*ds["train"], *ds["test"]):
        stored = by_id[exported["step_label_id"]]
        assert exported["completions"] == stored.steps
        assert exported["labels"] == [x != "bad" for x in stored.labels]  # neutral counts as right (prm.neutral)
    assert "PRMTrainer" in (out / "README.md").read_text()

    jsonl = tmp_path / "steps-jsonl"
    export_dataset(workspace, db, "steps", jsonl, Actor.shell(), fmt="jsonl", anonymize=True)
    loaded = datasets.load_dataset("json", data_files=str(jsonl / "train.jsonl"), split="train")
    assert set(loaded["annotator"]) <= {"annotator-1", "annotator-2"}
    assert any(e.action == "export" and e.params["what"] == "steps" for e in storage.audit_events(db))


def test_a_first_wrong_step_row_stops_at_that_step(db, workspace, tmp_path) -> None:
    _chains(db, 1)
    user = storage.create_annotator(db, "alice", "password123")
    task = storage.next_step_task(db, user.id, sources=None)
    steps = task.text.splitlines()
    storage.record_step_labels(db, user.id, task.sample_id, steps=steps, first_wrong=2,
                               labels=["good", "bad"] + [None] * (len(steps) - 2))
    export_dataset(workspace, db, "steps", tmp_path / "out", Actor.shell(), fmt="jsonl", test_fraction=0.0)
    (row,) = datasets.load_dataset("json", data_files=str(tmp_path / "out" / "train.jsonl"), split="train")
    assert row["completions"] == steps[:2] and row["labels"] == [True, False] and row["first_wrong"] == 2


def test_nothing_to_export_and_options_that_do_not_apply_are_refused(db, workspace, tmp_path) -> None:
    with pytest.raises(ActionRefused, match="no step labels yet"):
        export_dataset(workspace, db, "steps", tmp_path / "out", Actor.shell())
    with pytest.raises(ActionRefused, match="--include-ties does not apply to --what steps"):
        export_dataset(workspace, db, "steps", tmp_path / "out", Actor.shell(), include_ties=True)
    workspace.config.labeling.step_sets = []
    with pytest.raises(SimulationError, match="labeling.step_sets"):
        simulate_step_labels(db, workspace.config, labels=1)
