"""`rlhf rewards check`: the reward functions (and the reward model) on a version's stored samples or on its answers
to a prompt file, printed as a table or JSON; one line when there is nothing to check."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import storage
from rlhf_core.config import RewardFunctionConfig, dump_config
from rlhf_core.workspace import init_workspace

ANSWER = RewardFunctionConfig(kind="answer_match", column="answer", weight=2.0)
FORMAT = RewardFunctionConfig(kind="format_regex", pattern=r"^The answer is \d+\.$", name="format")


def rlhf(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "rlhf_core", *args], capture_output=True, text=True,
                          env={**os.environ, "COLUMNS": "160"}, timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(f"rlhf {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture
def workspace(tmp_path: Path, tiny_model_dir: Path):  # noqa: ANN201
    ws, _ = init_workspace(tmp_path / "ws", model=str(tiny_model_dir))
    ws.config.reward.functions = [ANSWER, FORMAT]
    ws.config.sampling.max_new_tokens = 6
    (ws.root / "rlhf.toml").write_text(dump_config(ws.config), encoding="utf-8")
    db = ws.database()
    storage.add_prompts(db, [[{"role": "user", "content": "What is 2 + 2?"}],
                             [{"role": "user", "content": "Say hello."}]], columns=[{"answer": 4}, {}])
    first, second = storage.list_prompts(db)
    storage.record_generations(db, prompt_id=first.id, policy_version_id=0,
                               responses=[("The answer is 4.", 5), ("It is 5", 3)], gen_params={}, pairs=[(0, 1)],
                               judgments_wanted=1)
    storage.record_generations(db, prompt_id=second.id, policy_version_id=0,
                               responses=[("Hello!", 2), ("The answer is 7.", 5)], gen_params={}, pairs=[(0, 1)],
                               judgments_wanted=1)
    yield ws, db
    db.dispose()


def test_stored_samples_as_json_and_as_a_table(workspace) -> None:
    ws, _ = workspace
    result = json.loads(rlhf("rewards", "check", "-w", str(ws.root), "--json").stdout)
    assert result["version"] == 0 and result["source"] == "stored samples"
    got = {r["response"]: (r["scores"], r["combined"]) for r in result["rows"]}
    assert got == {"The answer is 4.": ({"answer_match": 1.0, "format": 1.0}, 3.0),
                   "It is 5": ({"answer_match": 0.0, "format": 0.0}, 0.0),
                   "Hello!": ({"answer_match": None, "format": 0.0}, 0.0),
                   "The answer is 7.": ({"answer_match": None, "format": 1.0}, 1.0)}
    summary = {s["name"]: (s["mean"], s["applies"]) for s in result["summary"]}
    assert summary == {"answer_match": (0.5, 2), "format": (0.5, 4)}
    table = rlhf("rewards", "check", "-w", str(ws.root), "--limit", "4").stdout
    assert "combined = sum of 2 x answer_match, 1 x format" in table
    assert "answer_match: mean 0.500 over the 2 of 4 responses it applies to (weight 2)" in table


def test_a_prompt_file_is_answered_and_its_columns_used(workspace, tmp_path: Path) -> None:
    ws, _ = workspace
    path = tmp_path / "more.jsonl"
    path.write_text('{"prompt": "What is 1 + 1?", "answer": 2}\n{"prompt": "What is 3 + 3?", "answer": 6}\n',
                    encoding="utf-8")
    result = json.loads(rlhf("rewards", "check", "-w", str(ws.root), "--prompts", str(path), "--json").stdout)
    assert result["source"] == "more.jsonl" and [r["prompt"] for r in result["rows"]] == ["What is 1 + 1?",
                                                                                          "What is 3 + 3?"]
    assert all(r["scores"]["answer_match"] in (0.0, 1.0) for r in result["rows"])  # the file's answers apply


def test_the_reward_model_beside_the_functions(workspace, judged_pairs) -> None:
    from rlhf_core.service.rewards_check import check_rewards
    from rlhf_core.training.reward_service import run_reward_training
    from rlhf_core.training.workspace_stack import load_stack

    ws, db = workspace
    ws.config.reward.epochs = 1
    ws.config.reward.combine = "normalize_then_sum"
    judged_pairs(db, 6, {"ann": True})
    stack = load_stack(ws)
    run_reward_training(ws, db, stack, progress=False)
    result = check_rewards(ws, db, limit=4, stack_loader=lambda: stack)
    assert result.components == ["reward_model", "answer_match", "format"]
    assert all(isinstance(r.scores["reward_model"], float) for r in result.rows)
    assert any("reward model v1" in note for note in result.notes)


def test_nothing_to_check_is_one_line(tmp_path: Path, tiny_model_dir: Path) -> None:
    ws, _ = init_workspace(tmp_path / "empty", model=str(tiny_model_dir))
    proc = rlhf("rewards", "check", "-w", str(ws.root), check=False)
    assert proc.returncode == 1
    assert proc.stderr.strip() == ("error: nothing to check: add [[reward.functions]] entries to rlhf.toml (or train "
                                   "a reward model: rlhf train-rm)")
