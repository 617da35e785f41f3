"""The step-label commands end to end on a tiny model: `rlhf train-prm` refused in one line without step labels,
`rlhf simulate-steps` labeling the step tasks, `rlhf train-prm` as a job, `rlhf export --what steps`, and
`rlhf generate --best-of N --by prm` with the trained PRM."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import storage
from rlhf_core.config import dump_config
from rlhf_core.simulator.steps import arithmetic_problem, worked_chain
from rlhf_core.workspace import init_workspace

ROOT = Path(__file__).resolve().parent.parent


def rlhf(ws: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "rlhf_core", *args, "--workspace", str(ws)], capture_output=True,
                          text=True, env=env, timeout=600, cwd=ROOT)


def test_simulate_train_export_and_best_of_n_from_the_command_line(tmp_path: Path, tiny_model_dir: Path) -> None:
    ws, _ = init_workspace(tmp_path / "ws", model=str(tiny_model_dir))
    ws.config.labeling.mode = "steps"
    ws.config.sampling.max_new_tokens = 8
    ws.config.prm.epochs = 1
    ws.config.prm.max_length = 96
    ws.config_path.write_text(dump_config(ws.config), encoding="utf-8")
    refused = rlhf(ws.root, "train-prm")
    assert refused.returncode == 1 and refused.stderr.strip().splitlines()[-1].startswith("error: No step labels yet")

    db = ws.database()
    rng = random.Random(0)
    problems = [arithmetic_problem(rng, 2) for _ in range(8)]
    storage.add_prompts(db, [[{"role": "user", "content": p.question}] for p in problems], source="arith.jsonl")
    for prompt, problem in zip(storage.list_prompts(db), problems):
        chains = ["\n".join(worked_chain(problem, rng, 0.4)) for _ in range(2)]
        storage.record_generations(db, prompt_id=prompt.id, policy_version_id=0, responses=[(c, 10) for c in chains],
                                   gen_params={}, pairs=[(0, 1)])
    db.dispose()

    simulated = rlhf(ws.root, "simulate-steps", "--labels", "100", "--annotators", "2")
    assert simulated.returncode == 0, simulated.stderr
    assert "Labeled the steps of 16 responses" in simulated.stdout and "stopped: no responses left" in simulated.stdout
    trained = rlhf(ws.root, "train-prm")
    assert trained.returncode == 0, trained.stderr
    assert "prm_version=1" in trained.stdout and "heldout_step_accuracy=" in trained.stdout
    exported = rlhf(ws.root, "export", "--what", "steps", "--out", str(tmp_path / "steps"), "--format", "jsonl")
    assert exported.returncode == 0, exported.stderr
    rows = [json.loads(line) for name in ("train", "test") if (tmp_path / "steps" / f"{name}.jsonl").exists()
            for line in (tmp_path / "steps" / f"{name}.jsonl").read_text().splitlines()]
    assert len(rows) == 16 and all(len(r["completions"]) == len(r["labels"]) == 3 for r in rows)
    best = rlhf(ws.root, "generate", "--best-of", "2", "--by", "prm", "--json", problems[0].question)
    assert best.returncode == 0, best.stderr
    out = json.loads(best.stdout.strip().splitlines()[-1])
    assert out["by"] == "prm" and len(out["candidates"]) == 2
    assert all(c["score"] is None or 0.0 <= c["score"] <= 1.0 for c in out["candidates"])
