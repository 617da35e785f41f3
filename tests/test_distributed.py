"""Data-parallel training: `accelerate launch --cpu --num_processes 2 -m rlhf_core worker` (two gloo
processes) trains the reward model to the same adapter and the same per-step losses as one process."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from rlhf_core.workspace import init_workspace
from storage import enqueue_job, get_job, list_jobs, list_reward_models, training_logs

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(cmd: list[str], cwd: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "RLHF_WORKSPACE": ""}
    out = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]


@pytest.fixture
def two_workspaces(tmp_path: Path, tiny_model_dir: Path, judged_pairs):
    """Two identical workspaces with judged pairs and a queued reward-model job."""
    ws, _ = init_workspace(tmp_path / "one", model=str(tiny_model_dir))
    text = ws.config_path.read_text()
    text = text.replace('precision = "auto"', 'precision = "fp32"').replace("lora_dropout = 0.05", "lora_dropout = 0.0")
    text = text.replace("ensemble = 1", "ensemble = 2").replace("batch_size = 8", "batch_size = 6")
    ws.config_path.write_text(text)
    db = ws.database()
    judged_pairs(db, 14, {"ann": True, "other": False})
    enqueue_job(db, "train_rm", {})
    db.dispose()
    shutil.copytree(tmp_path / "one", tmp_path / "two")
    return tmp_path / "one", tmp_path / "two"


@pytest.mark.slow
def test_two_processes_train_the_same_reward_model_as_one(two_workspaces) -> None:
    one, two = two_workspaces
    run([sys.executable, "-m", "rlhf_core", "worker", "--once", "--workspace", str(one)], cwd=one)
    run([sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", "2", "--num_machines", "1",
         "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(free_port()),
         "-m", "rlhf_core", "worker", "--once", "--workspace", str(two)], cwd=two)

    from rlhf_core.workspace import open_workspace

    results = []
    for root in (one, two):
        db = open_workspace(root).database()
        [job] = list_jobs(db)
        assert get_job(db, job.id).status == "done", get_job(db, job.id).error
        [version] = list_reward_models(db)  # written once, by the main process only
        results.append((load_file(str(Path(version.adapter_path) / "adapter.safetensors")),
                        [row["loss"] for row in training_logs(db, phase="reward")]))
    (single, single_losses), (parallel, parallel_losses) = results
    assert len(single_losses) == len(parallel_losses) > 2
    torch.testing.assert_close(torch.tensor(parallel_losses), torch.tensor(single_losses), atol=1e-5, rtol=1e-4)
    assert single.keys() == parallel.keys()
    for key in single:
        torch.testing.assert_close(parallel[key], single[key], atol=2e-5, rtol=1e-4)
