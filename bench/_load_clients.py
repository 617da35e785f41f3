"""The load generator of bench/labeling_load.py: simulated annotators in their own processes.

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
