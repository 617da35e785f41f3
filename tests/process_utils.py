"""Helpers for tests that run `rlhf` as separate processes: start `rlhf serve`, wait for it, find
what is left of it (/proc), and kill what a failed test leaves behind."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]


def rlhf_process(*args: str, log: Path) -> subprocess.Popen:
    """`python -m rlhf_core ARGS` in a new session (its id is the pid), output to `log`."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen([sys.executable, "-m", "rlhf_core", *args], stdout=log.open("w"),
                            stderr=subprocess.STDOUT, env=env, cwd=ROOT, start_new_session=True)


def wait_for(condition, what: str, timeout_s: float, proc: subprocess.Popen | None = None,  # noqa: ANN001
             log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        if proc is not None and proc.poll() is not None:
            break
        time.sleep(0.2)
    tail = log.read_text()[-3000:] if log is not None and log.exists() else ""
    raise AssertionError(f"{what}: not within {timeout_s:.0f} s\n{tail}")


def answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code < 500
    except httpx.HTTPError:
        return False


def log_match(log: Path, pattern: str) -> re.Match | None:
    return re.search(pattern, log.read_text()) if log.exists() else None


def running(pid: int) -> bool:
    """The process exists and is not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def session_members(sid: int) -> list[int]:
    """Live processes of session `sid` (what `start_new_session` started, and its children)."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if int(fields[3]) == sid and fields[0] != "Z":  # fields: state ppid pgrp session ...
            members.append(int(entry.name))
    return members


def kill_session(sid: int) -> None:
    """Clean up after a failed test: SIGKILL every process of the session (our own test processes)."""
    for pid in session_members(sid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
