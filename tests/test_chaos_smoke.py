"""bench/chaos_loop.py in its smoke mode (`--smoke`, bench/_smoke.py): the whole loop on a throw-away PostgreSQL,
once without chaos and once with a SIGKILL of the server, one of the worker and a PostgreSQL restart, on the tiny
model; its table is printed, and nothing acknowledged is lost and no version is inconsistent even so."""

from __future__ import annotations

import glob
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(not glob.glob("/usr/lib/postgresql/*/bin/initdb"), reason="needs PostgreSQL's server programs")
def test_chaos_loop_smoke_prints_its_table_and_loses_nothing(tmp_path: Path, tiny_model_dir: Path) -> None:
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "chaos_loop.py"), "--smoke", "--json",
                          str(tmp_path / "chaos.json")], capture_output=True, text=True, timeout=1500,
                         env={**os.environ, "RLHF_BENCH_SMOKE_MODEL": str(tiny_model_dir)}, cwd=tmp_path)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    for pattern in (r"^phase\s+rounds\s+judgments\s+lost\s+dup\.\s+over k\s+inconsist\.",
                    r"^no chaos\s+\d+\s+\d+\s+0\s", r"^chaos\s+\d+\s+\d+\s+0\s+0\s+0\s+0\s",
                    r"^chaos: 1 server SIGKILLs, 1 worker SIGKILLs, 1 PostgreSQL",
                    r"^verdict: lost 0 \(must be 0\), inconsistent 0 \(must be 0\), \d+ rounds done \(of 1 wanted\): "
                    r"PASS"):
        assert re.search(pattern, out.stdout, re.M), (pattern, out.stdout)
    phases = json.loads((tmp_path / "chaos.json").read_text())["phases"]
    chaos = phases[-1]
    assert [p["phase"] for p in phases] == ["no chaos", "chaos"]
    assert all(e["down_s"] is not None for e in chaos["events"])  # every fault was carried out
    assert chaos["server_starts"] == 2 and chaos["worker_starts"] == 2
    assert chaos["acknowledged"] > 0 and chaos["lost"] == 0 and chaos["inconsistent"] == 0
