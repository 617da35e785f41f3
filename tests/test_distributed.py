"""Data-parallel training: `accelerate launch --multi_gpu --num_processes 2 -m rlhf_core worker` on a
CPU machine (two gloo processes; `--cpu` would start only one) trains the reward model and a DPO
policy update to the same adapters and the same per-step losses as one process; GRPO and PPO updates
of a fixed rollout match one process as well, and a GRPO update through the worker gathers every
process's rollouts and records the version once."""

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

from rlhf_core.workspace import init_workspace, open_workspace
from storage import enqueue_job, get_job, get_policy, list_jobs, list_reward_models, training_logs

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


LAUNCH_TWO = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]


def launch_two(*args: str) -> list[str]:
    """`accelerate launch` of two CPU (gloo) processes on a free port."""
    return [*LAUNCH_TWO, "--main_process_port", str(free_port()), *args]


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
    # One annotator right and one wrong: a reward model at chance; the round's policy update must run anyway.
    text = text.replace("min_reward_confidence = 0.5", "min_reward_confidence = 0.0")
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
    run(launch_two("-m", "rlhf_core", "worker", "--once", "--workspace", str(two)), cwd=two)

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


@pytest.mark.slow
def test_two_processes_make_the_grpo_and_ppo_updates_of_one(tmp_path: Path, tiny_model_dir: Path) -> None:
    script = str(ROOT / "tests" / "dp_update_job.py")
    run([sys.executable, script, str(tiny_model_dir), str(tmp_path / "one")], cwd=tmp_path)
    run(launch_two(script, str(tiny_model_dir), str(tmp_path / "two")), cwd=tmp_path)
    import json

    single, parallel = (json.loads((tmp_path / d / "metrics.json").read_text()) for d in ("one", "two"))
    for algo, keys in (("grpo", ("loss", "kl_k3", "approx_kl", "clip_fraction", "grad_norm_policy")),
                       ("ppo", ("policy_loss", "value_loss", "approx_kl", "grad_norm_policy", "grad_norm_value"))):
        for key in keys:
            assert parallel[algo][key] == pytest.approx(single[algo][key], rel=1e-4, abs=1e-6), (algo, key)
    assert single["grpo"]["loss"] != 0.0 and single["ppo"]["value_loss"] > 0.0
    one, two = (load_file(str(tmp_path / d / "adapters.safetensors")) for d in ("one", "two"))
    assert one.keys() == two.keys() and any(t.abs().sum() > 0 for t in one.values())
    for key in one:  # Adam divides by the gradient's own scale: summation-order noise in a near-zero
        # gradient moves its weight by up to ~1% of a step (lr 1e-3); atol is 5% of one step
        torch.testing.assert_close(two[key], one[key], atol=5e-5, rtol=1e-4)


@pytest.mark.slow
def test_two_processes_run_dpo_and_grpo_policy_updates(two_workspaces) -> None:
    """A DPO round (reward model + DPO on the judged pairs) matches one process; a GRPO update then
    trains on both processes' rollouts (the whole prompts_per_step x group_size per step)."""
    one, two = two_workspaces
    for root in (one, two):
        db = open_workspace(root).database()
        enqueue_job(db, "round", {"algo": "dpo"})
        enqueue_job(db, "train_policy", {"algo": "grpo"})
        db.dispose()
    run([sys.executable, "-m", "rlhf_core", "worker", "--until-empty", "--workspace", str(one)], cwd=one)
    run(launch_two("-m", "rlhf_core", "worker", "--until-empty", "--workspace", str(two)), cwd=two)

    results = []
    for root in (one, two):
        ws = open_workspace(root)
        db = ws.database()
        jobs = list_jobs(db)
        assert [get_job(db, j.id).status for j in jobs] == ["done"] * 3, [get_job(db, j.id).error for j in jobs]
        dpo, grpo = get_policy(db, 1), get_policy(db, 2)  # each written once, by the main process only
        assert (dpo.algorithm, grpo.algorithm, get_policy(db, 3)) == ("dpo", "grpo", None)
        logs = training_logs(db, phase="policy")
        results.append((load_file(str(Path(dpo.adapter_path) / "adapter.safetensors")),
                        [(row["dpo_loss"], row["grad_norm_policy"]) for row in logs if "dpo_loss" in row],
                        [row for row in logs if "dpo_loss" not in row], ws.config.policy))
    (single, single_losses, _, _), (parallel, parallel_losses, grpo_rows, cfg) = results
    assert len(single_losses) == len(parallel_losses) > 2
    torch.testing.assert_close(torch.tensor(parallel_losses), torch.tensor(single_losses), atol=1e-5, rtol=1e-4)
    for key in single:
        torch.testing.assert_close(parallel[key], single[key], atol=2e-5, rtol=1e-4)
    assert [row["step"] for row in grpo_rows] == list(range(len(grpo_rows)))  # logged once, not once per process
    assert 1 <= len(grpo_rows) <= cfg.steps
    assert all(row["samples"] == cfg.prompts_per_step * cfg.group_size for row in grpo_rows)
