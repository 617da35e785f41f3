"""The load generator of bench/labeling_load.py: simulated annotators in their own processes, and new
annotator sessions (`measure_new_sessions`).

Each client process logs its share of the annotators in, reports ready, waits for the start signal,
then runs them concurrently (asyncio + httpx) and returns latencies, acknowledged judgments and its
own CPU time over the load phase, so the report shows what the load generator took from the cores.
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import random
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx

VERDICT_ENDPOINTS = ("judge_left", "judge_right", "judge_tie", "judge_both_bad")
TOKEN = re.compile(r"\d+:\d{8}T\d+")


@dataclass
class ClientResult:
    """What one client process measured. Times in milliseconds; `cpu_s` in CPU seconds."""

    fetch_ms: list[float] = field(default_factory=list)
    submit_ms: list[float] = field(default_factory=list)
    handler_ms: list[float] = field(default_factory=list)  # event duration the server reports
    acknowledged: list[tuple[str, int]] = field(default_factory=list)  # (annotator, pair id) the server saved
    errors: list[str] = field(default_factory=list)
    cpu_s: float = 0.0
    events: int = 0


@dataclass(frozen=True)
class LoadPlan:
    url: str
    password: str
    judgments: int  # per annotator
    think_ms: float  # mean pause between seeing a pair and judging it (uniform 0.5x-1.5x)
    ramp_s: float  # annotators start evenly spread over this many seconds
    seed: int


def _token(payload: dict) -> str | None:
    return next((v for v in payload.get("data") or [] if isinstance(v, str) and TOKEN.fullmatch(v)), None)


def _saved(payload: dict) -> bool:
    return any(isinstance(v, str) and (v.startswith("Saved:") or "already saved" in v)
               for v in payload.get("data") or [])


async def _login(client: httpx.AsyncClient, name: str, password: str) -> str | None:
    for attempt in range(5):
        try:
            response = await client.post("/login", data={"username": name, "password": password})
        except httpx.HTTPError as exc:
            error = f"login: {type(exc).__name__}"
        else:
            if response.status_code == 200:
                return None
            error = f"login {response.status_code}"
        await asyncio.sleep(0.2 * (attempt + 1))
    return error


async def _annotate(client: httpx.AsyncClient, name: str, fn_index: dict[str, int], plan: LoadPlan,
                    rng: random.Random, delay_s: float, result: ClientResult) -> None:
    await asyncio.sleep(delay_s)
    session_hash = f"bench{rng.getrandbits(40):x}"

    async def call(api_name: str, data: list) -> tuple[float, dict | None, str]:
        body = {"data": data, "fn_index": fn_index[api_name], "session_hash": session_hash,
                "event_data": None, "trigger_id": None}
        t0 = time.perf_counter()
        try:
            response = await client.post(f"/gradio_api/run/{api_name}", json=body)
        except httpx.HTTPError as exc:
            return (time.perf_counter() - t0) * 1000, None, f"{api_name}: {type(exc).__name__}"
        elapsed = (time.perf_counter() - t0) * 1000
        result.events += 1
        if response.status_code != 200:
            return elapsed, None, f"{api_name} {response.status_code}: {response.text[:120]}"
        payload = response.json()
        result.handler_ms.append(payload.get("duration", 0.0) * 1000)
        return elapsed, payload, ""

    for _ in range(plan.judgments):
        elapsed, fetched, error = await call("next_pair", [])
        result.fetch_ms.append(elapsed)
        token = _token(fetched) if fetched else None
        if token is None:
            result.errors.append(error or "fetch: no pair")
            return
        if plan.think_ms:
            await asyncio.sleep(rng.uniform(0.5, 1.5) * plan.think_ms / 1000)
        endpoint = rng.choice(VERDICT_ENDPOINTS)
        strength = rng.choice([None, "slight", "clear", "strong"])
        elapsed, submitted, error = await call(endpoint, [token, strength, "bench"])
        result.submit_ms.append(elapsed)
        if submitted is not None and _saved(submitted):
            result.acknowledged.append((name, int(token.split(":")[0])))
        else:
            result.errors.append(error or f"submit: {str(submitted and submitted.get('data'))[:120]}")


async def _run(names: list[str], plan: LoadPlan, ready, go, worker_seed: int) -> ClientResult:  # noqa: ANN001
    result = ClientResult()
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
    clients = {name: httpx.AsyncClient(base_url=plan.url, timeout=120, limits=limits) for name in names}
    try:
        errors = await asyncio.gather(*[_login(clients[n], n, plan.password) for n in names])
        result.errors += [e for e in errors if e]
        config = (await clients[names[0]].get("/config")).json()
        fn_index = {d["api_name"]: d["id"] for d in config["dependencies"] if d.get("api_name")}
        ready.set()
        await asyncio.get_running_loop().run_in_executor(None, go.wait)
        cpu0 = time.process_time()
        rng = random.Random(worker_seed)
        await asyncio.gather(*[
            _annotate(clients[n], n, fn_index, plan, random.Random(rng.getrandbits(64)),
                      i * plan.ramp_s / len(names), result)
            for i, n in enumerate(names)
        ])
        result.cpu_s = time.process_time() - cpu0
    finally:
        await asyncio.gather(*[c.aclose() for c in clients.values()])
    return result


def client_main(names: list[str], plan: LoadPlan, ready, go, out, worker_seed: int) -> None:  # noqa: ANN001
    """Child process entry: run `names` against `plan.url`, put a ClientResult on `out`."""
    try:
        result = asyncio.run(_run(names, plan, ready, go, worker_seed))
    except Exception as exc:  # noqa: BLE001 - report to the parent instead of dying silently
        result = ClientResult(errors=[f"client process failed: {type(exc).__name__}: {exc}"])
        ready.set()
    out.put(result)


@dataclass
class ClientPool:
    """Client processes that have logged in and wait for `start()`."""

    processes: list
    ready: list
    go: object
    out: object

    def wait_ready(self, timeout_s: float = 300.0) -> None:
        deadline = time.monotonic() + timeout_s
        for event in self.ready:
            if not event.wait(max(0.0, deadline - time.monotonic())):
                raise RuntimeError("client processes did not log in in time")

    def start(self) -> None:
        self.go.set()

    def results(self) -> list[ClientResult]:
        results = [self.out.get() for _ in self.processes]
        for proc in self.processes:
            proc.join(30)
        return results


def start_clients(names: list[str], plan: LoadPlan, n_processes: int) -> ClientPool:
    """Spread `names` over `n_processes` spawned processes (round robin) and start them."""
    ctx = mp.get_context("spawn")
    go, out = ctx.Event(), ctx.Queue()
    shares = [names[i::n_processes] for i in range(n_processes)]
    ready = [ctx.Event() for _ in shares]
    processes = [ctx.Process(target=client_main, args=(share, plan, ev, go, out, plan.seed * 1000 + i), daemon=True)
                 for i, (share, ev) in enumerate(zip(shares, ready)) if share]
    for proc in processes:
        proc.start()
    return ClientPool(processes=processes, ready=ready[:len(processes)], go=go, out=out)


@dataclass
class SessionFigures:
    """Server CPU for new annotator sessions, in milliseconds per session: a login (`POST /login`), and a page
    session (the page as a browser loads it, then its load events under a fresh session hash, the first
    pair among them). `new_session_ms` is their sum."""

    sessions: int
    login_ms: float
    page_ms: float
    new_session_ms: float
    load_events: int  # backend events the page fires on load (ours: who is signed in, the first pair)
    errors: int
    first_error: str | None


async def _sessions(url: str, names: list[str], password: str, n: int, concurrency: int,
                    cpu_seconds: Callable[[], float]) -> SessionFigures:
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
    clients = [httpx.AsyncClient(base_url=url, timeout=120, limits=limits) for _ in range(n)]
    errors: list[str] = []
    gate = asyncio.Semaphore(concurrency)
    try:
        async def login(i: int) -> None:
            async with gate:
                error = await _login(clients[i], names[i % len(names)], password)
                if error:
                    errors.append(error)

        async def page(i: int) -> None:
            async with gate:
                client, session_hash = clients[i], f"new{i:06d}{random.getrandbits(32):08x}"
                for path in ("/", "/theme.css"):
                    response = await client.get(path)
                    if response.status_code != 200:
                        errors.append(f"GET {path} {response.status_code}")
                answers = await asyncio.gather(*[client.post("/gradio_api/run/predict", json={
                    "data": [], "fn_index": index, "session_hash": session_hash, "event_data": None,
                    "trigger_id": None}) for index in on_load])
                bad = [a for a in answers if a.status_code != 200]
                if bad or not any(_token(a.json()) for a in answers):
                    errors.append(f"load events: {bad[0].status_code if bad else 'no pair'}")

        cpu0 = cpu_seconds()
        await asyncio.gather(*[login(i) for i in range(n)])
        logins_s = cpu_seconds() - cpu0
        config = await clients[0].get("/config")  # not measured: which events the page fires on load
        on_load = [d["id"] for d in config.json()["dependencies"]
                   if d.get("backend_fn") and any(t[1] == "load" for t in d["targets"])] if config.is_success else []
        cpu1 = cpu_seconds()
        await asyncio.gather(*[page(i) for i in range(n)])
        pages_s = cpu_seconds() - cpu1
    finally:
        await asyncio.gather(*[c.aclose() for c in clients])
    login_ms, page_ms = 1000 * logins_s / n, 1000 * pages_s / n
    return SessionFigures(sessions=n, login_ms=round(login_ms, 3), page_ms=round(page_ms, 3),
                          new_session_ms=round(login_ms + page_ms, 3), load_events=len(on_load),
                          errors=len(errors) + (0 if on_load else 1),
                          first_error=errors[0] if errors else (None if on_load else "no load event in /config"))


def measure_new_sessions(url: str, names: list[str], password: str, n: int, cpu_seconds: Callable[[], float],
                         concurrency: int = 8) -> SessionFigures:
    """`n` new annotator sessions against `url` (`concurrency` at a time), as `names` (cycled): all log in, then
    each loads the page (`/` with its config, the theme's CSS; static assets left out, a browser caches them)
    and fires its load events as a browser does. `cpu_seconds()` reads the server processes' CPU time."""
    return asyncio.run(_sessions(url, names, password, n, concurrency, cpu_seconds))
