"""The `rlhf` command line, run as a user runs it (a subprocess of the installed console script)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


def rlhf(*args: str, env: dict[str, str] | None = None, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "rlhf_core", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(f"rlhf {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    root = tmp_path / "proj"
    out = rlhf("init", "--workspace", str(root)).stdout
    assert "Created workspace" in out
    return root


def test_init_creates_layout_and_rerun_is_a_no_op(ws: Path) -> None:
    for name in ("rlhf.toml", "rlhf.db", "guidelines.md", "adapters", "cache", "exports"):
        assert (ws / name).exists(), name
    rlhf("user", "add", "alice", "-w", str(ws), "--password", "password123")
    again = rlhf("init", "--workspace", str(ws)).stdout
    assert "already exists" in again
    assert "alice" in rlhf("user", "list", "-w", str(ws)).stdout


def test_command_outside_a_workspace_says_to_run_init(tmp_path: Path) -> None:
    proc = rlhf("status", "-w", str(tmp_path / "nowhere"), check=False)
    assert proc.returncode == 1
    assert proc.stderr.strip().count("\n") == 0, "one line, no traceback"
    assert "rlhf init" in proc.stderr


def test_workspace_from_environment(ws: Path, tmp_path: Path) -> None:
    status = json.loads(rlhf("status", "--json", env={"RLHF_WORKSPACE": str(ws)}).stdout)
    assert status["versions"] == {"policy": 0, "reward_model": None}


def test_prompt_import_formats_duplicates_and_errors(ws: Path, tmp_path: Path) -> None:
    good = tmp_path / "p.jsonl"
    good.write_text('{"prompt": "hello"}\n\n{"messages": [{"role": "system", "content": "be brief"}, '
                    '{"role": "user", "content": "hi"}]}\n{"prompt": "hello"}\n')
    out = rlhf("prompts", "import", str(good), "-w", str(ws)).stdout
    assert "Imported 2 prompts" in out and "1 duplicates" in out
    csv_file = tmp_path / "p.csv"
    csv_file.write_text('prompt,other\n"a, quoted prompt",x\nsecond,y\n')
    assert "Imported 2" in rlhf("prompts", "import", str(csv_file), "-w", str(ws), "--split", "eval").stdout

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "fine"}\n{"prompt": "also fine"}\n{"prompt": 3}\n')
    proc = rlhf("prompts", "import", str(bad), "-w", str(ws), check=False)
    assert proc.returncode == 1 and f"{bad}:3" in proc.stderr and "must be text" in proc.stderr
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"prompt": "fine"}\n{not json\n')
    proc = rlhf("prompts", "import", str(broken), "-w", str(ws), check=False)
    assert proc.returncode == 1 and f"{broken}:2" in proc.stderr
    bad_csv = tmp_path / "bad.csv"
    bad_csv.write_text("text\nhello\n")
    assert "needs a 'prompt' column" in rlhf("prompts", "import", str(bad_csv), "-w", str(ws), check=False).stderr
    counts = json.loads(rlhf("status", "--json", "-w", str(ws)).stdout)["counts"]
    assert counts["prompts"] == 4  # nothing from the rejected files was written


def test_prompt_import_from_a_datasets_directory(ws: Path, tmp_path: Path) -> None:
    import datasets

    path = tmp_path / "ds"
    datasets.Dataset.from_dict({"prompt": ["one", "two", "three"]}).save_to_disk(str(path))
    assert "Imported 3" in rlhf("prompts", "import", str(path), "-w", str(ws)).stdout


def test_users_passwords_roles_and_disable(ws: Path) -> None:
    rlhf("user", "add", "olga", "-w", str(ws), "--role", "operator", env={"RLHF_PASSWORD": "operator-pass"})
    proc = rlhf("user", "add", "bob", "-w", str(ws), "--role", "admin", "--password", "password123", check=False)
    assert proc.returncode == 1 and "role" in proc.stderr
    rlhf("user", "add", "bob", "-w", str(ws), "--password", "password123")
    rlhf("user", "disable", "bob", "-w", str(ws))
    listing = rlhf("user", "list", "-w", str(ws)).stdout
    assert "olga" in listing and "operator" in listing
    assert [line.split()[2] for line in listing.splitlines() if line.startswith("bob")] == ["no"]
    no_password = rlhf("user", "add", "carl", "-w", str(ws), check=False)
    assert no_password.returncode != 0 and "password" in (no_password.stderr + no_password.stdout).lower()


def test_status_json_has_the_stable_keys(ws: Path) -> None:
    status = json.loads(rlhf("status", "--json", "-w", str(ws)).stdout)
    assert set(status) >= {"counts", "judgments_per_annotator", "versions", "jobs"}
    assert set(status["counts"]) == {"prompts", "samples", "pairs", "pairs_open", "judgments"}
    assert set(status["versions"]) == {"policy", "reward_model"}
    assert set(status["jobs"]) == {"running", "queued"}
    assert "policy     v0 (base model)" in rlhf("status", "-w", str(ws)).stdout


def test_db_override_points_at_another_database(ws: Path, tmp_path: Path) -> None:
    other = f"sqlite:///{tmp_path / 'other.db'}"
    rlhf("init", "-w", str(ws), "--db", other)
    rlhf("user", "add", "zed", "-w", str(ws), "--db", other, "--password", "password123")
    assert "zed" in rlhf("user", "list", "-w", str(ws), "--db", other).stdout
    assert "zed" not in rlhf("user", "list", "-w", str(ws)).stdout


@pytest.mark.slow  # subprocesses that load models: ~16 s on 2 cores (CI runs the slow suite too)
def test_demo_runs_a_gated_round_on_a_small_model(tmp_path: Path, tiny_model_dir: Path) -> None:
    # Gold "longer": the tiny model's answers are near-ties for sentiment, too few decisive judgments of 8.
    out = rlhf("demo", "-w", str(tmp_path / "demo"), "--model", str(tiny_model_dir), "--rounds", "1",
               "--judgments", "8", "--gold", "longer").stdout
    assert "No GPU: using smaller" in out
    # Eight judgments: the reward model is trained (v1), but the 95% lower bound of its evidence (cross-fitted
    # and fresh accuracy) cannot clear loop.min_reward_confidence, so the round keeps policy v0 and says why.
    table = [line.split() for line in out.splitlines() if line.strip().startswith("1 ") and " v0 " in line]
    assert table and table[-1][1:4] == ["v0", "base", "8"]  # round 1, policy kept, 8 judgments
    assert "round 1: policy not updated, reward model v1: cross-fitted accuracy" in out
    assert "(loop.min_reward_confidence)" in out
    status = json.loads(rlhf("status", "--json", "-w", str(tmp_path / "demo")).stdout)
    assert status["versions"] == {"policy": 0, "reward_model": 1}
    assert status["counts"]["judgments"] == 8
    few = rlhf("demo", "-w", str(tmp_path / "few"), "--model", str(tiny_model_dir), "--rounds", "1",
               "--judgments", "2", check=False)
    assert few.returncode == 1 and "Traceback" not in few.stderr, few.stderr
    assert few.stderr.strip().splitlines()[-1].startswith(
        "error: need at least 4 decisive (a/b) judgments to train a reward model, have ")


def test_algo_must_be_ppo_grpo_or_dpo(ws: Path) -> None:
    proc = rlhf("round", "--algo", "a2c", "-w", str(ws), check=False)
    assert proc.returncode == 2 and "must be ppo, grpo or dpo" in proc.stderr


def test_a_failed_job_exits_non_zero_with_one_line(tmp_path: Path, tiny_model_dir: Path) -> None:
    root = tmp_path / "tiny"
    rlhf("init", "--workspace", str(root), "--model", str(tiny_model_dir))
    proc = rlhf("train-policy", "--algo", "dpo", "-w", str(root), check=False)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        "error: job #1 failed: ValueError: no train-split prompts: import some first (rlhf prompts import FILE "
        "--split train)")
