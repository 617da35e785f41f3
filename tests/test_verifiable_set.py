"""The verifiable prompt set shipped in the package and its benchmark: the files are what the generator writes,
every prompt carries an answer the shipped functions score 1 when given back, eval and train prompts are disjoint,
and `bench/verifiable.py --smoke` runs both configurations end to end on a tiny model."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from rlhf_core.rewards import build_reward_functions, score_with_functions
from rlhf_core.simulator.verifiable import VERIFIABLE_FUNCTIONS, verifiable_prompt_files

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))


def test_the_shipped_files_are_the_generators_and_answers_check() -> None:
    from _verifiable_set import build

    train, evaluation = build()
    files = [[json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
             for path in verifiable_prompt_files()]
    assert files == [train, evaluation]
    assert not {r["prompt"] for r in train} & {r["prompt"] for r in evaluation}
    assert len({r["task"] for r in evaluation}) == 8
    rows = train + evaluation
    functions = build_reward_functions(list(VERIFIABLE_FUNCTIONS))
    prompts = [[{"role": "user", "content": r["prompt"]}] for r in rows]
    right = score_with_functions(functions, prompts, [str(r["answer"]) for r in rows], rows)
    assert set(right.values["correct"]) == {1.0} and set(right.values["answer_only"]) == {1.0}
    chatty = score_with_functions(functions, prompts, [f"The answer is {r['answer']}." for r in rows], rows)
    assert set(chatty.values["answer_only"]) == {0.0}


def test_the_benchmark_smoke_run(tmp_path: Path) -> None:
    out = tmp_path / "rows.json"
    proc = subprocess.run([sys.executable, "bench/verifiable.py", "--smoke", "--workspace", str(tmp_path / "ws"),
                           "--json", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "smoke run (--smoke)" in proc.stdout
    for config in ("functions", "functions+rm"):
        assert f"[{config}]" in proc.stdout and f"{config}: accuracy " in proc.stdout
    rows = json.loads(out.read_text())
    assert [(r["config"], r["round"]) for r in rows] == [("functions", 0), ("functions", 1), ("functions+rm", 0),
                                                         ("functions+rm", 1)]
    assert rows[3]["judgments"] == 12 and rows[1]["judgments"] == 0
