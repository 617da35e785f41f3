"""The benchmark scripts run end to end on the tiny model and print/write real figures.

They are the only check of their performance targets, so they must not rot; these runs are far too
small to say anything about the targets themselves.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]


def _run(*args: str, timeout: int) -> str:
    proc = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


def test_train_step_bench_measures_both_sides(tmp_path: Path) -> None:
    out = tmp_path / "figures.json"
    stdout = _run("bench/train_step.py", "--model", "tiny", "--steps", "1", "--warmup", "0", "--json", str(out),
                  timeout=900)
    figures = json.loads(out.read_text())
    rows = {row["name"]: row for row in figures["table"]}
    assert set(rows) >= {"reward-model step", "GRPO step (rollout + score + update)", "PPO step peak memory"}
    for row in rows.values():
        assert row["ours"] > 0 and row["theirs"] > 0
        assert row["ratio"] == pytest.approx(row["ours"] / row["theirs"], rel=0.01)
    assert "PPO step peak memory" in stdout and "ratio" in stdout


def test_loop_efficacy_bench_runs_a_round(tmp_path: Path, tiny_model_dir: Path) -> None:
    out = tmp_path / "rounds.json"
    stdout = _run("bench/loop_efficacy.py", "--model", str(tiny_model_dir), "--rounds", "1", "--judgments", "12",
                  "--gold", "shorter", "--eval-prompts", "4", "--workspace", str(tmp_path / "ws"), "--json", str(out),
                  "--set", "sampling.max_new_tokens=8", "--set", "policy.steps=1", "--set", "policy.max_new_tokens=8",
                  "--set", "reward.epochs=1", timeout=900)
    (report,) = json.loads(out.read_text())
    assert report["round"] == 1 and report["policy_version"] == 1 and report["judgments"] == 12
    assert 0.0 <= report["gold_win_rate"] <= 1.0
    assert "target gold win rate >= 70% after round 1 with KL per token <= 0.1" in stdout
