"""Servers for bench/labeling_load.py: `rlhf serve --no-worker` processes, the trivial-Gradio floor,
and nginx in front of several app processes (with the config that ships in deploy/nginx/)."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
NGINX_SITE = ROOT / "deploy" / "nginx" / "rlhf-loop.conf"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (all its threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime


def wait_until_up(url: str, proc: subprocess.Popen | None = None, timeout_s: float = 180.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server for {url} exited with code {proc.returncode}; see its log")
        try:
            if httpx.get(url, timeout=2).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"nothing answered at {url} within {timeout_s:.0f} s")


@dataclass
class Servers:
    """Processes serving one phase of the bench; `url` is where clients go."""

    url: str
    app_processes: list[subprocess.Popen]
    others: list[subprocess.Popen] = field(default_factory=list)  # the load balancer

    def cpu_seconds(self) -> float:
        return sum(cpu_seconds(p.pid) for p in self.app_processes + self.others)

    def app_cpu_seconds(self) -> float:
        return sum(self.app_cpu_each())

    def app_cpu_each(self) -> list[float]:
        return [cpu_seconds(p.pid) for p in self.app_processes]

    def stop(self) -> None:
        for proc in self.others + self.app_processes:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.others + self.app_processes:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def start_app(root: Path, db_url: str | None, n_processes: int, logs: Path) -> Servers:
    """`n_processes` x `rlhf serve --no-worker` on one workspace and database; nginx in front when > 1."""
    ports = [free_port() for _ in range(n_processes)]
    procs = []
    for i, port in enumerate(ports):
        cmd = [sys.executable, "-m", "rlhf_core", "serve", "--no-worker", "--workspace", str(root),
               "--port", str(port)]
        if db_url:
            cmd += ["--db", db_url]
        log = (logs / f"app-{i}.log").open("w")
        procs.append(subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=_env(), cwd=root))
    for port, proc in zip(ports, procs):
        wait_until_up(f"http://127.0.0.1:{port}/", proc)
    if n_processes == 1:
        return Servers(url=f"http://127.0.0.1:{ports[0]}/", app_processes=procs)
    listen = free_port()
    nginx = start_nginx(ports, listen, logs)
    wait_until_up(f"http://127.0.0.1:{listen}/", nginx)
    return Servers(url=f"http://127.0.0.1:{listen}/", app_processes=procs, others=[nginx])


def start_floor(names: list[str], password: str, logs: Path) -> Servers:
    port = free_port()
    cmd = [sys.executable, str(ROOT / "bench" / "_gradio_floor.py"), "--port", str(port),
           "--users", ",".join(names), "--password", password]
    log = (logs / "floor.log").open("w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=_env())
    wait_until_up(f"http://127.0.0.1:{port}/", proc)
    return Servers(url=f"http://127.0.0.1:{port}/", app_processes=[proc])


def nginx_binary() -> str:
    """nginx from PATH or /usr/sbin; installed with apt-get (nginx-light) when missing and allowed."""
    found = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    if found:
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        print("nginx not found: installing nginx-light with apt-get ...", flush=True)
        subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", "nginx-light"], check=True,
                       stdout=subprocess.DEVNULL)
        return "/usr/sbin/nginx"
    raise RuntimeError("nginx is needed for --processes > 1: apt-get install nginx-light")


def site_config(upstream_ports: list[int], listen_port: int) -> str:
    """deploy/nginx/rlhf-loop.conf with its upstream servers and listen port replaced (nothing else)."""
    text = NGINX_SITE.read_text(encoding="utf-8")
    servers = "".join(f"    server 127.0.0.1:{port} max_fails=0;\n" for port in upstream_ports)
    text = re.sub(r"^[ \t]*server[ \t]+\S+:\d+[^;\n]*;\n", "", text, flags=re.MULTILINE)
    text, n_up = re.subn(r"upstream rlhf_app \{\n", lambda m: m.group(0) + servers, text)
    text, n_listen = re.subn(r"listen \d+;", f"listen 127.0.0.1:{listen_port};", text)
    if n_up != 1 or n_listen != 1:
        raise RuntimeError(f"{NGINX_SITE}: could not find the upstream block and listen line to fill in")
    return text


def start_nginx(upstream_ports: list[int], listen_port: int, logs: Path) -> subprocess.Popen:
    prefix = logs / "nginx"
    (prefix / "tmp").mkdir(parents=True, exist_ok=True)
    (prefix / "site.conf").write_text(site_config(upstream_ports, listen_port))
    user = "user root;\n" if os.geteuid() == 0 else ""
    (prefix / "nginx.conf").write_text(
        f"{user}worker_processes 1;\ndaemon off;\npid {prefix}/nginx.pid;\nerror_log {prefix}/error.log warn;\n"
        "events { worker_connections 4096; }\n"
        "http {\n"
        f"  access_log off;\n  client_body_temp_path {prefix}/tmp/body;\n  proxy_temp_path {prefix}/tmp/proxy;\n"
        f"  fastcgi_temp_path {prefix}/tmp/fastcgi;\n  uwsgi_temp_path {prefix}/tmp/uwsgi;\n"
        f"  scgi_temp_path {prefix}/tmp/scgi;\n"
        f"  include {prefix}/site.conf;\n"
        "}\n")
    log = (logs / "nginx.log").open("w")
    return subprocess.Popen([nginx_binary(), "-p", str(prefix), "-c", str(prefix / "nginx.conf")],
                            stdout=log, stderr=subprocess.STDOUT)
