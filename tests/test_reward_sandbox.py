"""python_tests runs a response's code in a sandbox, never in the calling process: an infinite loop, a fork bomb,
a memory hog, a write outside the temporary folder and a network attempt are each contained, and the caller goes on.
Both ways are tested: namespaces (`unshare`, where this machine allows them) and the audit-hook fallback."""

from __future__ import annotations

import errno
import os
import socket
import subprocess
import time
from pathlib import Path

import pytest

from rlhf_core.config import RewardFunctionConfig
from rlhf_core.rewards import build_reward_functions, score_with_functions
from rlhf_core.rewards.python_tests import response_code
from rlhf_core.rewards.sandbox import Isolation, Limits, run_tests, sandbox_isolation

LIMITS = Limits(timeout_seconds=3, memory_mb=256)


def _fallback() -> Isolation:
    found = sandbox_isolation()
    return Isolation(False, found.python, reason="forced by the test")


MODES = {"namespaces": sandbox_isolation, "fallback": _fallback}


@pytest.fixture(params=list(MODES))
def isolation(request: pytest.FixtureRequest) -> Isolation:
    found = MODES[request.param]()
    if request.param == "namespaces" and not found.isolated:
        pytest.skip(f"no namespaces here: {found.reason}")
    return found


def nobody_processes() -> list[str]:
    out = subprocess.run(["ps", "-u", "65534", "-o", "pid="], capture_output=True, text=True).stdout
    return out.split()


def test_tests_run_in_another_process_and_count(isolation: Isolation):
    solution = f"import os\nPARENT = {os.getpid()}\ndef add(a, b):\n    return a + b\n"
    tests = ["assert add(1, 2) == 3", "assert add(2, 2) == 5", "assert os.getpid() != PARENT"]
    run = run_tests(solution, tests, LIMITS, isolation)
    assert run.outcomes == ("pass", "fail", "pass") and run.score(3) == pytest.approx(2 / 3)


def test_an_infinite_loop_is_killed_at_the_deadline(isolation: Isolation):
    started = time.monotonic()
    run = run_tests("while True:\n    pass\n", ["assert True", "assert True"], LIMITS, isolation)
    assert run.outcomes == ("timeout", "timeout")
    assert time.monotonic() - started < LIMITS.timeout_seconds + 3


def test_a_fork_bomb_is_contained(isolation: Isolation):
    before = set(nobody_processes())
    bomb = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"
    started = time.monotonic()
    run = run_tests(bomb, ["assert True"], LIMITS, isolation)
    assert run.passed == 0 and time.monotonic() - started < LIMITS.timeout_seconds + 5
    time.sleep(0.5)
    assert set(nobody_processes()) <= before, "the bomb's processes outlived the run"
    # the machine still forks: the caller goes on
    assert subprocess.run(["true"]).returncode == 0


def test_a_memory_hog_hits_the_limit(isolation: Isolation):
    hog = "try:\n    block = bytearray(2 * 1024 ** 3)\nexcept MemoryError:\n    block = None\n"
    assert run_tests(hog, ["assert block is None"], LIMITS, isolation).outcomes == ("pass",)
    assert run_tests("block = bytearray(2 * 1024 ** 3)", ["assert True"], LIMITS, isolation).outcomes == ("fail",)


@pytest.mark.parametrize("where", ["tmp_path", "world-writable /tmp"])
def test_writes_outside_the_temporary_folder_are_refused(isolation: Isolation, tmp_path: Path, where: str):
    folder = tmp_path if where == "tmp_path" else Path("/tmp")
    outside = folder / f"written-by-a-response-{os.getpid()}.txt"
    code = (f"import errno\ntry:\n    open({str(outside)!r}, 'w').write('x')\n    refused = None\n"
            "except OSError as exc:\n    refused = exc.errno\n"
            "open('inside.txt', 'w').write('kept')\n")
    # Namespaces: the mount is read-only (a folder only root may enter answers "permission denied" first); the
    # fallback's audit hook answers EPERM.
    expected = {errno.EROFS, errno.EACCES} if isolation.isolated else {errno.EPERM}
    if isolation.isolated and where != "tmp_path":
        expected = {errno.EROFS}
    tests = [f"assert refused in {sorted(expected)}, refused", "assert open('inside.txt').read() == 'kept'"]
    try:
        assert run_tests(code, tests, LIMITS, isolation).outcomes == ("pass", "pass")
        assert not outside.exists()
    finally:
        outside.unlink(missing_ok=True)


def test_no_network_not_even_this_machine(isolation: Isolation):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    server.settimeout(0.5)
    port = server.getsockname()[1]
    code = (f"import socket\ntry:\n    socket.create_connection(('127.0.0.1', {port}), timeout=2)\n"
            "    reached = True\nexcept OSError:\n    reached = False\n")
    try:
        assert run_tests(code, ["assert not reached"], LIMITS, isolation).outcomes == ("pass",)
        with pytest.raises(TimeoutError):
            server.accept()
    finally:
        server.close()


def test_the_python_tests_kind_reads_fenced_code_and_the_tests_column():
    entry = RewardFunctionConfig(kind="python_tests", column="tests", timeout_seconds=5)
    functions = build_reward_functions([entry])
    right = "Here it is:\n```python\ndef square(x):\n    return x * x\n```\nDone."
    wrong = "```\ndef square(x):\n    return x + x\n```"
    tests = ["assert square(3) == 9", "assert square(2) == 4"]
    columns = [{"tests": tests}, {"tests": tests}, {"tests": "assert square(5) == 25"}, {}]
    result = score_with_functions(functions, [[]] * 4, [right, wrong, right, wrong], columns)
    assert result.values["python_tests"] == [1.0, 0.5, 1.0, None]
    assert response_code("no fence at all") == "no fence at all"
