"""Running a response's code against tests away from the serving and worker processes (`python_tests`).

Each run is a new process (`sandbox_child`, copied into a fresh temporary folder and run with `python -I -S`):
- with `unshare` (util-linux; root, or a user namespace for other users): new network namespace (no interface but a
  loopback that is down: nothing can be reached, not even this machine's 127.0.0.1), PID namespace (every process
  the code starts dies with the run), mount namespace in which every mount is read-only but a small tmpfs over the
  run's folder, the user nobody, and limits on address space (memory), processes, CPU seconds, file size;
- without it (no `unshare`, or namespaces refused, as in some containers): the same limits and a Python audit hook
  refusing sockets, new processes and writes outside the run's folder, with the reason stated by `isolation()`.

Every test runs in a process of its own and is killed with its process group at the deadline; the run as a whole is
killed (its namespace with it) shortly after. The score counts the tests that ran to their end.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

RUNNER = Path(__file__).with_name("sandbox_child.py")
UNPRIVILEGED = 65534
STARTUP_SECONDS = 5.0  # the interpreter's start and the namespaces' set-up, beyond the tests' own time
# The trial run: modules the runner has not imported, so an interpreter whose library the sandbox user cannot read
# (root's own, under /root) fails it.
PROBE = ("import collections, decimal, fractions, itertools, math, socket\nx = 1", ["assert x == 1"])
UNSHARE_FLAGS = ("--net", "--pid", "--fork", "--kill-child", "--mount", "--propagation", "private")


@dataclass(frozen=True)
class Limits:
    """What one response's tests may use: wall-clock (and CPU) seconds for all its tests, address space (MiB),
    processes of the sandbox user, the size of one written file (MiB) and of its writable folder (MiB)."""

    timeout_seconds: float = 10.0
    memory_mb: int = 512
    processes: int = 64
    file_mb: int = 16
    folder_mb: int = 64


@dataclass(frozen=True)
class Isolation:
    """How runs are isolated here: `isolated` (namespaces) or not, the interpreter, and a sentence saying why
    not when not."""

    isolated: bool
    python: str
    userns: bool = False
    reason: str = ""


@dataclass(frozen=True)
class TestRun:
    """The tests' outcomes ("pass", "fail", "timeout"), or none with `error` when the run itself failed."""

    outcomes: tuple[str, ...]
    error: str = ""

    @property
    def passed(self) -> int:
        return self.outcomes.count("pass")

    def score(self, total: int) -> float:
        return self.passed / total if total else 0.0


def _command(isolation: Isolation, work: Path, limits: Limits) -> list[str]:
    settings = {"isolated": isolation.isolated, "timeout_seconds": limits.timeout_seconds,
                "memory_mb": limits.memory_mb, "processes": limits.processes, "file_mb": limits.file_mb,
                "tmpfs_mb": limits.folder_mb}
    prefix: list[str] = []
    if isolation.isolated:
        prefix = ["unshare", *(["--user", "--map-root-user"] if isolation.userns else []), *UNSHARE_FLAGS, "--"]
    return [*prefix, isolation.python, "-I", "-S", str(work / "runner.py"), str(work), json.dumps(settings)]


def _kill_group(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def run_tests(solution: str, tests: list[str], limits: Limits = Limits(), isolation: Isolation | None = None
              ) -> TestRun:
    """Run `solution` then each of `tests` (Python source) in the sandbox; never raises for what the code does."""
    isolation = isolation or sandbox_isolation()
    work = Path(tempfile.mkdtemp(prefix="rlhf-python-tests-"))
    try:
        shutil.copyfile(RUNNER, work / "runner.py")
        (work / "job.json").write_text(json.dumps({"solution": solution, "tests": tests}), encoding="utf-8")
        if os.geteuid() == 0 and not isolation.userns:  # the runner drops to nobody, who writes in `work`
            os.chown(work, UNPRIVILEGED, UNPRIVILEGED)
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "TMPDIR": str(work), "HOME": str(work),
               "LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1", "PYTHONHASHSEED": "0",
               **({"RLHF_SANDBOX_USERNS": "1"} if isolation.userns else {})}
        process = subprocess.Popen(_command(isolation, work, limits), cwd=work, env=env, stdin=subprocess.DEVNULL,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
        try:
            out, err = process.communicate(timeout=limits.timeout_seconds + STARTUP_SECONDS)
        except subprocess.TimeoutExpired:
            _kill_group(process)
            try:
                process.communicate(timeout=5)
            except subprocess.TimeoutExpired:
                pass
            return TestRun(("timeout",) * len(tests), "the run passed its time limit and was killed")
        finally:
            _kill_group(process)  # anything the run left in its group (without a PID namespace)
        lines = out.decode("utf-8", "replace").strip().splitlines()
        try:
            outcomes = json.loads(lines[-1])["outcomes"] if lines else None
        except (json.JSONDecodeError, KeyError, TypeError):
            outcomes = None
        if not isinstance(outcomes, list) or len(outcomes) != len(tests):
            detail = err.decode("utf-8", "replace").strip().splitlines()
            return TestRun(("fail",) * len(tests), f"the test runner failed (exit {process.returncode}): "
                                                   f"{detail[-1] if detail else 'no output'}")
        return TestRun(tuple(str(o) for o in outcomes))
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _runnable_pythons() -> list[str]:
    candidates = [sys.executable, shutil.which("python3"), "/usr/bin/python3"]
    return list(dict.fromkeys(c for c in candidates if c and os.path.isfile(c)))


@functools.cache
def sandbox_isolation() -> Isolation:
    """Namespaces when they work here (tried once per process with a test that must pass), else the fallback with
    the reason. The interpreter is the first one the sandbox's user can run (root's own may sit in /root)."""
    if shutil.which("unshare") is None:
        return _fallback("util-linux's unshare is not installed (apt-get install util-linux)")
    userns = os.geteuid() != 0
    tried = []
    for python in _runnable_pythons():
        candidate = Isolation(True, python, userns)
        run = run_tests(*PROBE, Limits(timeout_seconds=10), candidate)
        if run.outcomes == ("pass",):
            return candidate
        tried.append(f"{python}: {run.error or run.outcomes[0]}")
    return _fallback("namespaces are not available here (" + "; ".join(tried) + ")")


def _fallback(reason: str) -> Isolation:
    pythons = _runnable_pythons()
    for python in pythons:
        candidate = Isolation(False, python, reason=reason)
        if run_tests(*PROBE, Limits(timeout_seconds=10), candidate).outcomes == ("pass",):
            return candidate
    return Isolation(False, pythons[0] if pythons else sys.executable, reason=reason)
