"""Every benchmark under bench/ runs in its smoke mode (`--smoke`, bench/_smoke.py) and prints its table.

Benchmarks are code (STYLE.md 14): a renamed option, a stale page selector or a changed API fails here, in
the default suite, not in a measurement a week later. The scripts are found, not listed: a new one without a
smoke mode, or without an entry in EXPECTED saying what its table shows, fails. The smoke runs share one tiny
model ($RLHF_BENCH_SMOKE_MODEL) and run two at a time, one torch thread each, to use both cores of a small
machine; their figures mean nothing and are not checked, only that they are printed and written.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
from browser_utils import CHROMIUM

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
TIMEOUT_S = 400  # one script, while another runs beside it on a busy machine


@dataclass(frozen=True)
class Expect:
    lines: tuple[str, ...]  # regular expressions its stdout must match (re.M): the table, its verdict lines
    json_files: tuple[str, ...] = ()  # a shell script: the files it writes into its output directory
    browser: bool = False  # drives Chromium: skipped where there is none, like the browser tests
    postgres: bool = False  # starts its own PostgreSQL server: skipped where its programs are not installed
    json_keys: tuple[str, ...] = ()  # top-level keys its --json file must hold, each not empty


EXPECTED = {
    "best_of_n.py": Expect((r"^PRM v1: held-out step accuracy [\d.]+ on \d+ steps \(majority label [\d.]+\)",
                            r"^answers kept\s+accuracy", r"^greedy\s+[\d.]+%", r"^best of 3 by functions\s+[\d.]+%",
                            r"^best of 3 by prm\s+[\d.]+%", r"^best of 3 by rm\s+[\d.]+%", r"^pass@3 ")),
    "chaos_loop.py": Expect((r"^phase\s+rounds\s+judgments\s+lost\s+dup\.\s+over k\s+inconsist\.",
                             r"^no chaos\s+\d+\s+\d+\s+0\s", r"^chaos\s+\d+\s+\d+\s+0\s+0\s+0\s+0\s",
                             r"^chaos: 1 server SIGKILLs, 1 worker SIGKILLs, 1 PostgreSQL",
                             r"^verdict: lost 0 \(must be 0\), inconsistent 0 \(must be 0\), \d+ rounds done "
                             r"\(of 1 wanted\): PASS"), postgres=True),
    "generation.py": Expect((r"^natural: variant\s+tok/s\s+x hf-base$", r"^forced: variant", r"^\s+ours-trained\s+\d",
                             r"target ours-trained >= 1\.0x hf-base: [\d.]+x")),
    "gpu_check.sh": Expect((r"^smoke run: CUDA parts skipped", r"^== round", r"^\s+1\s+v1\s+grpo\s+64\s",
                            r"^== generation", r"^\s+natural\s+ours-trained\s+[\d.]+ tok/s", r"^== train_step",
                            r"^reward-model step \(s/step\)", r"^GRPO step", r"gpu check done in \d+ s \(status 0\)"),
                           json_files=("round.json", "generation.json", "train_step.json")),
    "labeling_load.py": Expect((r"^\[trivial Gradio app with login \(the floor\)\]", r"^\[rlhf serve x1, SQLite\]",
                                r"^judgments/s\s+[\d.]+\s+\(6 acknowledged\)", r"^lost 0\s+duplicated 0\s+over k 0",
                                r"^new session\s+login [\d.]+ \+ page [\d.]+ = [\d.]+ ms server CPU\s+\(3 sessions",
                                r"^ours / floor: server CPU per event x[\d.]+")),
    "loop_efficacy.py": Expect((r"^round policy\s+algo\s+judg\.\s+RM acc", r"^\s+1\s+v1\s+grpo\s+64\s",
                                r"round 1 seconds by phase: sample", r"win rate vs base [\d.]+% after round 1")),
    "overoptimization.py": Expect((r"^mode\s+peak step\s+gold at peak\s+gold at end", r"^mean\s+\d+\s+[\d.]+%",
                                   r"^uwo\s+\d+", r"^wco\s+\d+",
                                   r"^gold peaked then fell \(below the peak's 95% interval\) while the proxy"),
                                  json_keys=("rows", "summary", "complete")),
    "verifiable.py": Expect((r"^config\s+round\s+policy\s+accuracy", r"^functions\s+1\s+v1\s",
                             r"^functions\+rm\s+1\s+v1\s", r"functions\+rm: accuracy [\d.]+% -> ")),
    "quickstart.py": Expect((r"^page up\s+[\d.]+ s$", r"^first pair\s+[\d.]+ s\s+\([\d.]+ x the 60 s target\)",
                             r"^4 pairs\s+[\d.]+ s", r"^exit code on SIGTERM: 0;"), browser=True),
    "reward_learning.py": Expect((r"^method\s+8\s+16$", r"^random\s+[\d.]+ \([\d.]+\)\s+[\d.]+",
                                  r"^uncertainty\s+[\d.]+", r"uncertainty reaches random's 16-judgment accuracy",
                                  r"^judge accuracy=0\.75 \| people-8-routed\+judge\s+[\d.]+\s+[\d.]+$"),
                                 json_keys=("curves", "judges")),
    "train_step": Expect((r"^measurement\s+ours\s+theirs\s+ratio\s+target\s+result$",
                          r"^reward-model step \(s/step\)\s+[\d.]+\s+[\d.]+",
                          r"^GRPO step \(rollout \+ score \+ update\)", r"^SFT step \(answer tokens only\)",
                          r"^PPO step peak memory \(MiB\)")),
}


def _skipped(expect: Expect) -> str | None:
    """Why this machine cannot run the smoke run (None: it can)."""
    if expect.browser and not Path(CHROMIUM).exists():
        return f"{CHROMIUM} not found (apt-get install chromium)"
    if expect.postgres and not glob.glob("/usr/lib/postgresql/*/bin/initdb"):
        return "PostgreSQL's server programs not found (apt-get install postgresql)"
    return None


def bench_scripts() -> list[str]:
    """What bench/ holds to run: scripts (*.py, *.sh) and packages run with -m (a __main__.py); helpers start
    with an underscore."""
    found = [p.name for p in BENCH.iterdir() if p.suffix in (".py", ".sh") and not p.name.startswith("_")]
    found += [p.parent.name for p in BENCH.glob("*/__main__.py")]
    return sorted(found)


def smoke_command(name: str, out: Path) -> tuple[list[str], Path | None]:
    """The smoke run of `name`, with `--json` where the script takes it; the JSON path (or None)."""
    path = BENCH / name
    if path.suffix == ".sh":
        return ["bash", str(path), "--smoke", str(out / "figures")], None
    if path.is_dir():
        command, source = [sys.executable, "-m", f"bench.{name}", "--smoke"], path / "__main__.py"
    else:
        command, source = [sys.executable, str(path), "--smoke"], path
    if '"--json"' not in source.read_text(encoding="utf-8"):
        return command, None
    return [*command, "--json", str(out / "figures.json")], out / "figures.json"


def run_smoke(name: str, out: Path, tiny_model: Path) -> subprocess.CompletedProcess:
    """Run `name --smoke` in its own process group; past TIMEOUT_S the group gets SIGINT first, so a bench's
    cleanup (stopping the servers it started) runs, then SIGKILL."""
    command, _ = smoke_command(name, out)
    # Its temporary files go to a short folder of their own: under pytest-xdist the test's own folder is long enough
    # (.../popen-gw0/smoke-quickstart-py0/...) to push Chromium's singleton socket past the 108 bytes of a unix path.
    tmp = Path(tempfile.mkdtemp(prefix="rlhf-smoke-"))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "RLHF_BENCH_SMOKE_MODEL": str(tiny_model), "TMPDIR": str(tmp), "OMP_NUM_THREADS": "1",
           "TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGINT)
        try:
            stdout, stderr = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            stdout, stderr = proc.communicate()
        stdout += f"\n[timed out after {TIMEOUT_S} s]"
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return subprocess.CompletedProcess(command, proc.returncode, stdout, stderr)


@pytest.fixture(scope="module")
def smoke_runs(request: pytest.FixtureRequest, tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """The smoke runs of every script this session selected, started in test order, two at a time."""
    selected = [item.callspec.params["script"] for item in request.session.items
                if item.path == Path(__file__) and "script" in getattr(getattr(item, "callspec", None), "params", {})]
    pool = ThreadPoolExecutor(max_workers=2)
    runs: dict[str, tuple[Future, Path]] = {}
    for name in selected:
        if name in EXPECTED and not _skipped(EXPECTED[name]):
            out = tmp_path_factory.mktemp(f"smoke-{name.replace('.', '-')}")
            runs[name] = (pool.submit(run_smoke, name, out, tiny_model_dir), out)
    yield runs
    pool.shutdown(wait=True, cancel_futures=True)


@pytest.mark.parametrize("script", bench_scripts())
def test_bench_smoke(script: str, smoke_runs: dict[str, tuple[Future, Path]]) -> None:
    if script not in EXPECTED:
        pytest.fail(f"bench/{script} is new: give it a smoke mode (--smoke, bench/_smoke.py) and add what its smoke "
                    "run prints (its table) to EXPECTED in tests/test_bench_smoke.py")
    expect = EXPECTED[script]
    if _skipped(expect):
        pytest.skip(_skipped(expect))
    future, out = smoke_runs[script]
    proc = future.result()
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"bench/{script} --smoke exited {proc.returncode}:\n{output[-6000:]}"
    assert "smoke run" in proc.stdout, f"bench/{script} ignored --smoke:\n{proc.stdout[-3000:]}"
    missing = [line for line in expect.lines if not re.search(line, proc.stdout, re.M)]
    assert not missing, f"bench/{script} --smoke did not print {missing}:\n{proc.stdout[-6000:]}"
    _, json_path = smoke_command(script, out)
    written = [json_path] if json_path else [out / "figures" / name for name in expect.json_files]
    for path in written:
        assert path.is_file(), f"bench/{script} --smoke did not write {path.name}"
        assert json.loads(path.read_text()), f"bench/{script} --smoke wrote an empty {path.name}"
    if expect.json_keys:
        figures = json.loads(json_path.read_text())
        assert all(figures.get(key) for key in expect.json_keys), f"{json_path.name} lacks {expect.json_keys}"


def test_the_judge_bench_reads_its_specs_and_names_a_bad_part() -> None:
    sys.path.insert(0, str(BENCH))
    from _judges import parse_judge_spec

    assert parse_judge_spec("accuracy=0.75") == ({"accuracy": 0.75, "left_bias": 0.0}, ["every", "routed", "alone"])
    assert parse_judge_spec("accuracy=0.75,left_bias=0.5,runs=routed") == ({"accuracy": 0.75, "left_bias": 0.5},
                                                                          ["routed"])
    assert parse_judge_spec("runs=alone/every") == ({"accuracy": 1.0, "left_bias": 0.0}, ["every", "alone"])
    for bad, says in (("accuracy=1.5", "accuracy must be between 0 and 1"), ("runs=sometimes", "runs=R[/R...]"),
                      ("bias=0.5", "'bias=0.5' is not accuracy=P")):
        with pytest.raises(ValueError, match=re.escape(says)):
            parse_judge_spec(bad)


@pytest.mark.parametrize(("option", "says"), [
    (("--gold", "nope"), "error: unknown gold preference 'nope'; available: concise, keyword"),
    (("--algo", "dpo"), "error: unknown policy algorithm for rollouts 'dpo' (known: ppo, grpo)"),
])
def test_the_overoptimization_bench_refuses_a_bad_gold_or_algorithm_before_any_work(
        tmp_path: Path, option: tuple[str, str], says: str) -> None:
    out = tmp_path / "over.json"
    proc = subprocess.run([sys.executable, str(BENCH / "overoptimization.py"), *option, "--json", str(out),
                           "--workspace", str(tmp_path / "ws")], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and says in proc.stderr.strip().splitlines()[-1]  # one line says why
    assert "Traceback" not in proc.stderr
    assert not out.exists() and not (tmp_path / "ws").exists()
