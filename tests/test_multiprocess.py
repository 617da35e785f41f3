"""Several `rlhf serve --no-worker` processes on one database (SQLite, then PostgreSQL): a login made
on one process works on another (labeling page and operator console) and a logout ends it everywhere;
`kill -9` of the app in the middle of a burst of submissions loses no judgment it acknowledged and never
over-fills a pair."""

from __future__ import annotations

import re
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from browser_utils import PASSWORD, add_pairs, free_port
from process_utils import answers, kill_session, rlhf_process, wait_for
from sqlmodel import func, select

from labeling_app.auth import SESSION_CACHE_SECONDS
from rlhf_core.config import dump_config
from rlhf_core.workspace import Workspace, init_workspace
from storage import Database, Judgment, Pair, create_annotator, judgment_rows

TOKEN = re.compile(r"\d+:\d{8}T\d+")


def workspace_on(db: Database, root: Path) -> Workspace:
    """A workspace on the conftest database; no pool top-up (no model is loaded)."""
    ws, _ = init_workspace(root, db_url=db.url)
    ws.config.sampling.pool_min_open_pairs = 0
    ws.config_path.write_text(dump_config(ws.config))
    return ws


def start_servers(ws: Workspace, db: Database, n: int, logs: Path) -> list[tuple[str, object]]:
    servers = []
    for i in range(n):
        port = free_port()
        log = logs / f"serve-{i}.log"
        proc = rlhf_process("serve", "--no-worker", "--workspace", str(ws.root), "--db", db.url, "--port", str(port),
                            log=log)
        servers.append((f"http://127.0.0.1:{port}", proc, log))
    for url, proc, log in servers:
        wait_for(lambda u=url: answers(u + "/"), f"{url} answering", 180, proc, log)
    return [(url, proc) for url, proc, _ in servers]


@pytest.fixture
def two_servers(db: Database, tmp_path: Path) -> Iterator[list[tuple[str, object]]]:
    ws = workspace_on(db, tmp_path / "ws")
    create_annotator(db, "alice", PASSWORD)
    servers = start_servers(ws, db, 2, tmp_path)
    yield servers
    stop_servers(servers)


def stop_servers(servers: list[tuple[str, object]]) -> None:
    """SIGTERM every server, wait for each, and kill whatever a server leaves behind."""
    for _, proc in servers:
        proc.send_signal(signal.SIGTERM)
    for _, proc in servers:
        try:
            proc.wait(30)
        finally:
            kill_session(proc.pid)


def run(client: httpx.Client, api_name: str, *data: object) -> httpx.Response:
    return client.post(f"/gradio_api/run/{api_name}", json={"data": list(data), "session_hash": "mp"})


def token_in(response: httpx.Response) -> str | None:
    data = response.json().get("data") or [] if response.status_code == 200 else []
    return next((v for v in data if isinstance(v, str) and TOKEN.fullmatch(v)), None)


def test_login_on_one_process_judges_on_another_and_logout_ends_it_everywhere(db: Database, two_servers) -> None:  # noqa: ANN001
    (url_a, _), (url_b, _) = two_servers
    add_pairs(db, [("sample a of 1", "sample b of 1"), ("sample a of 2", "sample b of 2")])
    with httpx.Client(base_url=url_a, timeout=30) as on_a, httpx.Client(base_url=url_b, timeout=30) as on_b:
        assert on_a.post("/login", data={"username": "alice", "password": PASSWORD}).status_code == 200
        assert run(on_b, "next_pair").status_code == 401  # no cookie yet: B knows nobody
        on_b.cookies = on_a.cookies  # the browser's cookie jar, now sent to the other process
        token = token_in(run(on_b, "next_pair"))
        assert token is not None
        assert on_b.get("/operator/config").json()["username"] == "alice"  # the console on B knows her login too
        saved = run(on_a, "judge_left", token, "clear", "judged through A, served by B")
        assert any(str(v).startswith("Saved: A better") for v in saved.json()["data"])
        assert token_in(saved) is not None  # A serves the next pair in the same answer
        (row,) = judgment_rows(db)
        assert (row.annotator, str(row.pair_id), row.strength) == ("alice", token.split(":")[0], "clear")

        old_cookie = dict(on_a.cookies)  # what a second tab, or a thief, would still send
        assert on_a.get("/logout", follow_redirects=False).status_code == 302
        on_a.cookies, on_b.cookies = httpx.Cookies(old_cookie), httpx.Cookies(old_cookie)
        assert run(on_a, "next_pair").status_code == 401  # at once on the process that logged out
        deadline = time.monotonic() + SESSION_CACHE_SECONDS + 5
        while run(on_b, "next_pair").status_code != 401:
            assert time.monotonic() < deadline, "the other process still accepts the ended session"
            time.sleep(0.5)


def test_kill_9_during_a_burst_loses_no_acknowledged_judgment(db: Database, tmp_path: Path) -> None:
    ws = workspace_on(db, tmp_path / "ws")
    names = [f"burst-{i}" for i in range(8)]
    for name in names:
        create_annotator(db, name, PASSWORD)
    add_pairs(db, [(f"a{i}", f"b{i}") for i in range(600)])
    ((url, proc),) = start_servers(ws, db, 1, tmp_path)
    acknowledged: list[tuple[str, int]] = []
    lock, started = threading.Lock(), threading.Barrier(len(names) + 1)

    def annotate(name: str) -> None:
        with httpx.Client(base_url=url, timeout=10) as client:
            client.post("/login", data={"username": name, "password": PASSWORD})
            started.wait()
            try:
                token = token_in(run(client, "next_pair"))
                while token is not None:
                    answer = run(client, "judge_tie", token, None, "")
                    if any(str(v).startswith("Saved") for v in answer.json()["data"]):
                        with lock:
                            acknowledged.append((name, int(token.split(":")[0])))
                    token = token_in(answer)
            except (httpx.HTTPError, ValueError):
                return  # the server died under us: what it answered before is what counts

    threads = [threading.Thread(target=annotate, args=(n,)) for n in names]
    for t in threads:
        t.start()
    try:
        started.wait(120)
        wait_for(lambda: len(acknowledged) >= 40, "a burst under way", 120, proc)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        for t in threads:
            t.join(60)
    finally:
        kill_session(proc.pid)
    stored = {(r.annotator, r.pair_id) for r in judgment_rows(db)}
    assert acknowledged and set(acknowledged) <= stored, set(acknowledged) - stored
    with db.session() as s:
        over_k = s.exec(select(func.count()).select_from(Pair).where(Pair.n_judgments > Pair.judgments_wanted)).one()
        counted = s.exec(select(func.sum(Pair.n_judgments))).one()
        rows = s.exec(select(func.count()).select_from(Judgment)).one()
    assert over_k == 0 and counted == rows  # each pair's count matches its rows: no half-done write survived
