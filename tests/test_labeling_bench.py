"""bench/labeling_load.py end to end, tiny: it must keep measuring what it claims (both phases,
ratios, read-back, new sessions), one process and behind nginx. Far too small to say anything about targets."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]


def bench(*args: str, json_path: Path) -> tuple[str, dict]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "bench/labeling_load.py", *args, "--json", str(json_path)], cwd=ROOT,
                          capture_output=True, text=True, timeout=900, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout, json.loads(json_path.read_text())


def test_one_process_against_the_gradio_floor(tmp_path: Path) -> None:
    out, report = bench("--annotators", "4", "--judgments-each", "3", "--think-ms", "0", "--sessions", "6",
                        json_path=tmp_path / "r.json")
    ours, floor = report["ours"], report["floor"]
    assert ours["judgments_acknowledged"] == 12 and floor["judgments_acknowledged"] == 12
    assert (ours["lost"], ours["duplicated"], ours["over_k"], ours["errors"]) == (0, 0, 0, 0)
    assert ours["events"] == floor["events"] == 24
    assert ours["server_cpu_ms_per_event"] > 0 and floor["server_cpu_ms_per_event"] > 0
    assert report["ratio_server_cpu_per_event"] == pytest.approx(
        ours["server_cpu_ms_per_event"] / floor["server_cpu_ms_per_event"], rel=0.01)
    assert ours["client_cpu_s"] > 0 and ours["fetch_ms"]["p99"] is not None
    assert "trivial Gradio app with login" in out and "load average" in out
    # New sessions: each logs in, opens the page and fires its load events (ours: who is signed in, the first pair).
    mine, theirs = ours["new_session"], floor["new_session"]
    assert (mine["sessions"], mine["errors"], mine["load_events"]) == (6, 0, 2)
    assert (theirs["sessions"], theirs["errors"], theirs["load_events"]) == (6, 0, 1)
    assert mine["login_ms"] > 0  # a password check (scrypt) per login
    assert mine["new_session_ms"] == pytest.approx(mine["login_ms"] + mine["page_ms"], abs=0.01)
    assert report["ratio_page_session_cpu"] == pytest.approx(mine["page_ms"] / max(theirs["page_ms"], 1e-9), rel=0.01)
    assert "new session" in out


def test_two_processes_behind_nginx(tmp_path: Path) -> None:
    if not (shutil.which("nginx") or Path("/usr/sbin/nginx").exists() or os.geteuid() == 0):
        pytest.skip("nginx is not installed and cannot be installed here (apt-get install nginx-light)")
    _, report = bench("--processes", "2", "--annotators", "6", "--judgments-each", "3", "--think-ms", "0",
                      "--no-floor", "--k", "2", "--sessions", "4", json_path=tmp_path / "r.json")
    ours = report["ours"]
    assert "floor" not in report and ours["judgments_acknowledged"] == 18
    assert (ours["lost"], ours["duplicated"], ours["over_k"], ours["errors"]) == (0, 0, 0, 0)
    assert len(ours["app_cpu_s_per_process"]) == 2 and min(ours["app_cpu_s_per_process"]) > 0  # both served
    assert (ours["new_session"]["errors"], ours["new_session"]["load_events"]) == (0, 2)  # through nginx
