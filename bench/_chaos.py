"""The moving parts of bench/chaos_loop.py: a throw-away PostgreSQL server it can restart, the loop's processes
(`rlhf serve --no-worker`, `rlhf worker`) it can SIGKILL and start again, simulated annotators judging over HTTP
as a browser does, and the seeded chaos driver. Everything listens on 127.0.0.1 and stops with the benchmark."""

from __future__ import annotations

import contextlib
import glob
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
TOKEN = re.compile(r"\d+:\d{8}T\d+")
PASSWORD = "chaos-password"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PostgresServer:
    """A PostgreSQL server of its own in a temporary folder, on a free loopback port (as postgres when root)."""

    def __init__(self, logs: Path) -> None:
        found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
        if not found:
            raise SystemExit("PostgreSQL's server programs are needed (apt-get install postgresql): none under "
                             "/usr/lib/postgresql/*/bin")
        self.bin, self.port, self.copy_log_to = Path(found[-1]).parent, free_port(), logs / "postgres.log"
        self.as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        # As root the server runs as postgres, who must reach its folder: under /tmp itself, not under a $TMPDIR
        # that may sit in a folder only root may enter (pytest's). Its log is copied beside the others at stop.
        self.top = Path(tempfile.mkdtemp(prefix="rlhf-chaos-pg-", dir="/tmp" if self.as_user else None))
        self.data, self.log = self.top / "data", self.top / "postgres.log"
        self.data.mkdir()
        self.log.touch()
        if self.as_user:
            for path in (self.top, self.data, self.log):
                shutil.chown(path, "postgres")
        self._run("initdb", "-D", str(self.data), "-U", "rlhf", "--auth=trust")
        self.start()

    def _run(self, tool: str, *args: str) -> None:
        subprocess.run([*self.as_user, str(self.bin / tool), *args], check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)

    def _options(self) -> str:
        return f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.data} -c max_connections=300"

    def start(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-o", self._options(), "start")

    def restart(self, mode: str) -> float:
        """Restart ("immediate": as after a crash, WAL recovery on start; "fast"); returns the seconds it was down."""
        started = time.monotonic()
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")
        self.start()
        return time.monotonic() - started

    def create_database(self, name: str) -> str:
        subprocess.run([str(self.bin / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "rlhf", name],
                       check=True)
        return f"postgresql://rlhf@127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        subprocess.run([*self.as_user, str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop"],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        with contextlib.suppress(OSError):
            shutil.copyfile(self.log, self.copy_log_to)
        shutil.rmtree(self.top, ignore_errors=True)


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


@dataclass
class LoopProcesses:
    """The app server and the worker of one workspace, started, killed and started again."""

    workspace: Path
    logs: Path
    port: int = field(default_factory=free_port)
    server: subprocess.Popen | None = None
    worker: subprocess.Popen | None = None
    starts: Counter = field(default_factory=Counter)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def _start(self, name: str, args: list[str]) -> subprocess.Popen:
        self.starts[name] += 1
        log = (self.logs / f"{self.workspace.name}-{name}-{self.starts[name]}.log").open("w")
        return subprocess.Popen([sys.executable, "-m", "rlhf_core", *args, "--workspace", str(self.workspace)],
                                stdout=log, stderr=subprocess.STDOUT, env=_env(), start_new_session=True)

    def start_server(self, timeout_s: float = 300.0) -> None:
        self.server = self._start("server", ["serve", "--no-worker", "--port", str(self.port)])
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.server.poll() is not None:
                raise RuntimeError(f"rlhf serve exited with code {self.server.returncode}; see {self.logs}")
            try:
                if httpx.get(self.url, timeout=2).status_code < 500:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise RuntimeError(f"rlhf serve did not answer within {timeout_s:.0f} s; see {self.logs}")

    def start_worker(self) -> None:
        self.worker = self._start("worker", ["worker", "--poll", "0.5", "--stale-after", "30"])

    @staticmethod
    def _kill(proc: subprocess.Popen | None) -> None:
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(30)

    def kill_server(self) -> None:
        self._kill(self.server)

    def kill_worker(self) -> None:
        self._kill(self.worker)

    def stop(self) -> None:
        for proc in (self.server, self.worker):
            if proc is not None and proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in (self.server, self.worker):
            if proc is not None:
                try:
                    proc.wait(60)
                except subprocess.TimeoutExpired:
                    self._kill(proc)


@dataclass
class AnnotatorStats:
    acknowledged: list[tuple[str, int]] = field(default_factory=list)  # (annotator, pair) the page said it saved
    errors: Counter = field(default_factory=Counter)  # failed requests, by cause
    episodes: int = 0  # errors an annotator saw: a run of failed requests (retried every RETRY_S) counts once
    idle_polls: int = 0  # "nothing to judge right now" (between rounds): not an error


RETRY_S = 2.0  # an annotator who saw an error tries again after this long, as a person clicking again would


class Annotators:
    """`names` judging over HTTP as the page does: log in, fetch a pair, think, judge; every failed request is an
    error they saw (then they wait a moment and go on, logging in again when asked)."""

    def __init__(self, url: str, names: list[str], think_s: float, seed: int) -> None:
        self.url, self.names, self.think_s = url, names, think_s
        self.stats = AnnotatorStats()
        self.stop = threading.Event()
        self._lock = threading.Lock()
        self._failing: set[str] = set()
        self._threads = [threading.Thread(target=self._run, args=(name, random.Random(seed * 1000 + i)), daemon=True)
                         for i, name in enumerate(names)]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def join(self) -> None:
        self.stop.set()
        for thread in self._threads:
            thread.join(120)

    def _error(self, name: str, cause: str) -> None:
        with self._lock:
            self.stats.errors[cause] += 1
            if name not in self._failing:
                self._failing.add(name)
                self.stats.episodes += 1
        self.stop.wait(RETRY_S)

    def _ok(self, name: str) -> None:
        with self._lock:
            self._failing.discard(name)

    def _call(self, client: httpx.Client, name: str, api: str, data: list) -> dict | None:
        try:
            response = client.post(f"/gradio_api/run/{api}", json={"data": data, "session_hash": f"chaos-{name}"})
        except httpx.HTTPError as exc:
            self._error(name, f"{api}: {type(exc).__name__} (server down)")
            return None
        if response.status_code in (401, 403):
            self._error(name, f"{api}: HTTP {response.status_code} (logged out)")
            client.post("/login", data={"username": name, "password": PASSWORD})
            return None
        if response.status_code != 200:
            self._error(name, f"{api}: HTTP {response.status_code}")
            return None
        self._ok(name)
        return response.json()

    def _run(self, name: str, rng: random.Random) -> None:
        with httpx.Client(base_url=self.url, timeout=60) as client:
            while not self.stop.is_set():
                try:
                    if client.post("/login", data={"username": name, "password": PASSWORD}).status_code == 200:
                        break
                    self._error(name, "login refused")
                except httpx.HTTPError as exc:
                    self._error(name, f"login: {type(exc).__name__} (server down)")
            while not self.stop.is_set():
                fetched = self._call(client, name, "next_pair", [])
                if fetched is None:
                    continue
                token = next((v for v in fetched.get("data") or [] if isinstance(v, str) and TOKEN.fullmatch(v)), None)
                if token is None:  # nothing to judge until the next round samples pairs
                    with self._lock:
                        self.stats.idle_polls += 1
                    self.stop.wait(1.0)
                    continue
                self.stop.wait(rng.uniform(0.5, 1.5) * self.think_s)
                verdict = rng.choice(["judge_left", "judge_right", "judge_left", "judge_right", "judge_tie"])
                saved = self._call(client, name, verdict, [token, rng.choice([None, "clear"]), ""])
                if saved is None:
                    continue
                texts = [v for v in saved.get("data") or [] if isinstance(v, str)]
                if any(t.startswith("Saved:") or "already saved" in t for t in texts):
                    with self._lock:
                        self.stats.acknowledged.append((name, int(token.split(":")[0])))
                else:
                    self._error(name, f"{verdict}: not saved")


@dataclass
class ChaosEvent:
    at_s: float
    kind: str  # "server", "worker" or "postgres"
    done_at_s: float | None = None
    down_s: float | None = None


def chaos_plan(seed: int, window: tuple[float, float], kills: int, pg_restarts: int) -> list[ChaosEvent]:
    """`kills` SIGKILLs each of the server and the worker and `pg_restarts` PostgreSQL restarts at seeded random
    moments within `window` (seconds from the start)."""
    rng = random.Random(seed)
    kinds = ["server"] * kills + ["worker"] * kills + ["postgres"] * pg_restarts
    rng.shuffle(kinds)
    times = sorted(rng.uniform(*window) for _ in kinds)
    return [ChaosEvent(at, kind) for at, kind in zip(times, kinds)]


class ChaosDriver(threading.Thread):
    """Carries out a plan against running processes and a PostgreSQL server, each fault at its moment: a killed
    process is started again at once (the server after `restart_after_s`), as a supervisor (systemd) would, in a
    thread of its own, so a slow restart does not hold back the next fault (faults of one kind wait their turn)."""

    def __init__(self, plan: list[ChaosEvent], loop: LoopProcesses, postgres: PostgresServer | None, *,
                 pg_mode: str = "immediate", restart_after_s: float = 1.0) -> None:
        super().__init__(daemon=True)
        self.plan, self.loop, self.postgres, self.pg_mode = plan, loop, postgres, pg_mode
        self.restart_after_s, self.stop = restart_after_s, threading.Event()
        self.started = time.monotonic()
        self.failures: list[str] = []
        self._turns = {kind: threading.Lock() for kind in ("server", "worker", "postgres")}
        self._threads: list[threading.Thread] = []

    @property
    def done(self) -> bool:
        """Every fault of the plan has been carried out and its process or server is back."""
        return all(event.down_s is not None for event in self.plan)

    def run(self) -> None:
        for event in self.plan:
            if self.stop.wait(max(0.0, event.at_s - (time.monotonic() - self.started))):
                return
            thread = threading.Thread(target=self._carry_out, args=(event,), daemon=True)
            thread.start()
            self._threads.append(thread)
        for thread in self._threads:
            thread.join()

    def _carry_out(self, event: ChaosEvent) -> None:
        with self._turns[event.kind]:
            t0 = time.monotonic()
            event.done_at_s = t0 - self.started
            try:
                if event.kind == "server":
                    self.loop.kill_server()
                    time.sleep(self.restart_after_s)
                    self.loop.start_server()
                elif event.kind == "worker":
                    self.loop.kill_worker()
                    self.loop.start_worker()
                elif self.postgres is not None:
                    self.postgres.restart(self.pg_mode)
            except Exception as exc:  # noqa: BLE001 - reported with the table, the run goes on
                self.failures.append(f"{event.kind} at {event.at_s:.0f} s: {exc}")
            event.down_s = time.monotonic() - t0
