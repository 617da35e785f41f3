"""Start-up and disk faults (issue 41), on SQLite and PostgreSQL: a database that cannot be reached when a command
starts gets bounded retries (a server that comes up meanwhile is used) and then one line saying what to fix, never a
traceback; a full disk during a version write (a real small filesystem: a tmpfs of 1 MiB) fails the job with one
sentence, leaves no half-written files and no row, and labeling keeps serving."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
import torch
from sqlalchemy.engine import make_url
from test_recovery_ops import PASSWORD, TOKEN, judge_over_http, open_questions

import storage
from rlhf_core.config import dump_config
from rlhf_core.loop.worker import Worker
from rlhf_core.service.actor import Actor
from rlhf_core.service.jobs import request_job
from rlhf_core.training.checkpoint import Checkpoint
from rlhf_core.workspace import init_workspace


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def rlhf(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rlhf_core", *args], capture_output=True, text=True, timeout=timeout,
                          env=dict(os.environ))


def workspace_with_url(root: Path, url: str, attempts: int):  # noqa: ANN201
    ws, _ = init_workspace(root)
    ws.config.database_url, ws.config.recovery.connect_attempts = url, attempts
    ws.config_path.write_text(dump_config(ws.config))
    return ws


class StartingServer:
    """A TCP port in front of a database server that is still starting: its first `refuse` connections are closed
    at once (the client sees the server go away, as during PostgreSQL's start), later ones are passed through."""

    def __init__(self, target: tuple[str, int], refuse: int) -> None:
        self.port, self.target, self.refuse = free_port(), target, refuse
        self.server = socket.create_server(("127.0.0.1", self.port))
        self.server.settimeout(0.2)
        self.stop = threading.Event()
        self.live: list[socket.socket] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def restart(self, refuse: int) -> None:
        """As a server restart looks to its clients: every open connection is dropped, and the next `refuse` ones
        are closed at once (the server is still starting)."""
        self.refuse = refuse
        for sock in self.live:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        self.live.clear()

    def _serve(self) -> None:
        with self.server:
            while not self.stop.is_set():
                try:
                    client, _ = self.server.accept()
                except TimeoutError:
                    continue
                if self.refuse > 0:
                    self.refuse -= 1
                    client.close()
                    continue
                upstream = socket.create_connection(self.target)
                self.live += [client, upstream]
                for a, b in ((client, upstream), (upstream, client)):
                    threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


def test_a_postgres_that_is_down_at_start_gets_bounded_retries_then_one_line(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    ws = workspace_with_url(tmp_path / "ws", f"postgresql://rlhf@127.0.0.1:{port}/rlhf", attempts=3)
    for command in (["status"], ["worker", "--once"], ["serve", "--no-worker", "--port", str(free_port())]):
        started = time.monotonic()
        out = rlhf(*command, "--workspace", str(ws.root))
        lines = out.stderr.strip().splitlines()
        assert out.returncode == 1 and "Traceback" not in out.stderr, (command, out.stderr)
        assert time.monotonic() - started >= 3  # waited 1 s, then 2 s
        retries = [line.split("(")[-1] for line in lines if " not reachable (Connection refused); trying again" in line]
        assert retries == ["attempt 1 of 3)", "attempt 2 of 3)"], lines  # (libraries may print their own lines)
        assert lines[-1].startswith(f"error: cannot reach the database postgresql+psycopg://rlhf@127.0.0.1:{port}/rlhf "
                                    "after 3 attempts over "), lines
        assert lines[-1].endswith("(Connection refused): start it, or fix database_url in rlhf.toml or --db"), lines


def test_a_postgres_that_comes_up_during_the_retries_is_used(tmp_path: Path) -> None:
    base = os.environ.get("RLHF_TEST_PG_URL")
    if not base:
        pytest.skip("set RLHF_TEST_PG_URL to run against PostgreSQL (scripts/test_postgres.sh starts one)")
    server = make_url(base)
    proxy = StartingServer((server.host, server.port), refuse=2)
    try:
        url = server.set(port=proxy.port).render_as_string(hide_password=False)
        ws = workspace_with_url(tmp_path / "ws", url, attempts=4)
        out = rlhf("status", "--json", "--workspace", str(ws.root))
    finally:
        proxy.stop.set()
    assert out.returncode == 0, out.stderr
    retries = [line for line in out.stderr.splitlines() if " not reachable (" in line]
    assert [line.rpartition("(")[2] for line in retries] == ["attempt 1 of 4)", "attempt 2 of 4)"], out.stderr
    assert '"counts"' in out.stdout


def test_the_labeling_page_waits_out_a_database_restart_and_says_so_when_it_lasts(tmp_path: Path) -> None:
    from conftest import _drop_postgres, _fresh_postgres

    from labeling_app import serve

    base = os.environ.get("RLHF_TEST_PG_URL")
    if not base:
        pytest.skip("set RLHF_TEST_PG_URL to run against PostgreSQL (scripts/test_postgres.sh starts one)")
    direct, name = _fresh_postgres(base)
    direct.upgrade()
    storage.ensure_base_policy(direct)
    direct.dispose()
    server = make_url(direct.url)
    proxy = StartingServer((server.host, server.port), refuse=0)
    ws = workspace_with_url(tmp_path / "ws", server.set(port=proxy.port).render_as_string(hide_password=False), 1)
    db = ws.database()
    open_questions(db, 3)
    storage.create_annotator(db, "rita", PASSWORD)
    served = serve(ws, db, port=free_port(), block=False, quiet=True)

    def next_pair(session: httpx.Client) -> tuple[float, httpx.Response]:
        started = time.monotonic()
        answer = session.post("/gradio_api/run/next_pair", json={"data": [], "session_hash": "r"})
        return time.monotonic() - started, answer

    try:
        with httpx.Client(base_url=served.url, timeout=60) as session:
            assert session.post("/login", data={"username": "rita", "password": PASSWORD}).status_code == 200
            assert next_pair(session)[1].status_code == 200
            time.sleep(5.2)  # past the session cache: the next request looks the session up in the database
            proxy.restart(refuse=4)  # the session lookup and the first tries of the page's load are refused
            took, answer = next_pair(session)
            assert answer.status_code == 200, answer.text
            token = next(v for v in answer.json()["data"] if isinstance(v, str) and TOKEN.fullmatch(v))
            assert 1.0 < took < 10, took  # waited (0.25 + 0.5 + 1 s between tries) rather than failed
            assert proxy.refuse == 0
            proxy.restart(refuse=10**6)  # down for longer: a verdict is not retried blindly, the page says why
            refused = session.post("/gradio_api/run/judge_left", json={"data": [token, None, ""], "session_hash": "r"})
            assert refused.status_code != 200
            assert "The database cannot be reached just now (it may be restarting)" in refused.text, refused.text
            proxy.refuse = 0
            saved = session.post("/gradio_api/run/judge_left", json={"data": [token, None, ""], "session_hash": "r"})
            assert saved.status_code == 200, saved.text
            assert any(isinstance(v, str) and v.startswith("Saved") for v in saved.json()["data"])
            assert storage.count_judgments(db) == 1
    finally:
        served.close()
        db.dispose()
        proxy.stop.set()
        _drop_postgres(base, name)


def test_a_sqlite_database_that_cannot_be_opened_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("not a folder")
    ws = workspace_with_url(tmp_path / "ws", f"sqlite:///{tmp_path / 'a-file' / 'rlhf.db'}", attempts=2)
    out = rlhf("status", "--workspace", str(ws.root))
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert out.stderr.strip().splitlines()[-1] == (
        f"error: cannot open the SQLite database {tmp_path / 'a-file' / 'rlhf.db'}: its folder cannot be created "
        "(File exists); fix database_url in rlhf.toml or --db")
    (tmp_path / "garbage.db").write_bytes(b"\x00garbage" * 1000)
    ws = workspace_with_url(tmp_path / "ws2", f"sqlite:///{tmp_path / 'garbage.db'}", attempts=2)
    out = rlhf("worker", "--once", "--workspace", str(ws.root))
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 1 and "Traceback" not in out.stderr and sum("trying again" in x for x in lines) == 1
    garbage = tmp_path / "garbage.db"
    assert lines[-1].startswith(f"error: cannot reach the database sqlite:///{garbage} after 2 attempts")
    assert "(file is not a database)" in lines[-1]


@pytest.fixture
def small_filesystem(tmp_path: Path):  # noqa: ANN201
    """A real 1 MiB filesystem (tmpfs; needs root, as here and in CI), unmounted afterwards."""
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True,
                          text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small filesystem here ({done.stderr.strip()}): run as root")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(mount: Path, leave_bytes: int) -> None:
    free = os.statvfs(mount).f_bavail * os.statvfs(mount).f_frsize
    (mount / "filler").write_bytes(b"\0" * (free - leave_bytes))


def test_a_full_disk_during_a_version_write_fails_the_job_cleanly_and_labeling_goes_on(
        db, tmp_path: Path, small_filesystem: Path, tiny_model_dir: Path, judged_pairs) -> None:
    ws, _ = init_workspace(tmp_path / "ws", model=str(tiny_model_dir), db_url=db.url)
    ws.config.reward.epochs, ws.config.reward.max_length = 1, 48
    ws.config_path.write_text(dump_config(ws.config))
    ws.adapters_dir.rmdir()
    ws.adapters_dir.symlink_to(small_filesystem)  # versions are written on the small filesystem
    fill(small_filesystem, leave_bytes=16 * 1024)  # a tiny model's reward adapter is ~150 KB
    judged_pairs(db, 8, {"ann": True})
    storage.add_prompts(db, [[{"role": "user", "content": "still served?"}]])
    prompt = storage.list_prompts(db)[-1]
    storage.record_generations(db, prompt_id=prompt.id, policy_version_id=0, responses=[("yes", 1), ("no", 1)],
                               gen_params={}, pairs=[(0, 1)])
    job = request_job(ws, db, "train_rm", {}, Actor.shell())
    done = Worker(ws, db, poll_seconds=0.05).run_until_done(job.id, timeout=600)
    assert done.status == "failed"
    assert done.error.splitlines()[0] == (
        f"VersionWriteError: reward model v1 was not published: writing its files to {ws.adapters_dir} failed (the "
        "disk is full); free space there and run the job again")
    assert sorted(p.name for p in small_filesystem.iterdir()) == ["filler"]  # nothing half-written
    assert storage.list_reward_models(db) == []
    assert judge_over_http(ws, db).startswith("Saved")  # labeling keeps serving


def test_a_checkpoint_that_does_not_fit_is_skipped_and_training_goes_on(small_filesystem: Path) -> None:
    fill(small_filesystem, leave_bytes=8 * 1024)
    checkpoint = Checkpoint(small_filesystem / "job-000001" / "reward.pt", every=1)
    assert checkpoint.write({"params": [torch.zeros(100_000)]}) is False  # 400 KB into 8 KB
    assert sorted(p.name for p in small_filesystem.rglob("*")) == ["filler", "job-000001"]  # no .tmp left
