"""Load test of the labeling app: N simulated annotators fetch pairs and submit judgments through
the same HTTP endpoints the page's events use, against the server `labeling_app.serve` runs.

    python bench/labeling_load.py                          # 50 annotators x 20 judgments, SQLite
    python bench/labeling_load.py --think-ms 0             # flat out: throughput at saturation
    python bench/labeling_load.py --db postgresql://user@127.0.0.1/rlhf_bench

By default each simulated annotator pauses 5 s (uniform 2.5-7.5 s) between seeing a pair and
judging it; people reading two responses take longer, so 50 of them offer at most ~9 judgments/s.
`--think-ms 0` removes the pause and measures the saturated server instead (latency is then
queueing: 50 clients waiting on a server that does one judgment at a time).

Each annotator logs in (`POST /login`), then loops: fetch its pair (`POST /gradio_api/run/next_pair`,
the page-load event), optionally pause, submit a random verdict (`POST /gradio_api/run/judge_*`, the
button events; the page shows the pair in that response next, the bench fetches it again to time
fetches). The server runs in its own process. Afterwards the database is read back: lost =
acknowledged submissions without a row; duplicated = rows beyond one per (pair, annotator).
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import random
import re
import socket
import statistics
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx  # noqa: E402

from labeling_app import AppServices, serve  # noqa: E402
from rlhf_core.workspace import init_workspace, open_workspace  # noqa: E402
from storage import add_prompts, create_annotator, judgment_rows, list_prompts, record_generations  # noqa: E402

PASSWORD = "bench-password-1"
VERDICT_ENDPOINTS = ("judge_left", "judge_right", "judge_tie", "judge_both_bad")
TOKEN = re.compile(r"\d+:\d{8}T\d+")
RESPONSES_PER_PROMPT = 4  # 6 pairs per prompt


@dataclass
class AnnotatorResult:
    fetch_ms: list[float] = field(default_factory=list)
    submit_ms: list[float] = field(default_factory=list)
    server_ms: list[float] = field(default_factory=list)  # handler time Gradio reports (incl. waiting for the DB)
    acknowledged: list[int] = field(default_factory=list)  # pair ids the server said it saved
    errors: list[str] = field(default_factory=list)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def prepare(root: Path, db_url: str | None, annotators: int, pairs: int, run_tag: str) -> list[str]:
    """A workspace with `annotators` users and at least `pairs` open pairs of fake texts."""
    ws, _ = init_workspace(root, db_url=db_url)
    db = ws.database()
    names = [f"bench-{run_tag}-{i:03d}" for i in range(annotators)]
    for name in names:
        create_annotator(db, name, PASSWORD)
    n_prompts = -(-pairs // (RESPONSES_PER_PROMPT * (RESPONSES_PER_PROMPT - 1) // 2))
    add_prompts(db, [[{"role": "user", "content": f"bench {run_tag} question {i}: explain item {i}."}]
                     for i in range(n_prompts)], source=f"bench-{run_tag}")
    combos = [(i, j) for i in range(RESPONSES_PER_PROMPT) for j in range(i + 1, RESPONSES_PER_PROMPT)]
    for prompt in list_prompts(db):
        if f"bench {run_tag} " not in prompt.messages_json:
            continue
        texts = [(f"Answer {k} to prompt {prompt.id}. " + "Some filler text. " * 20, 60)
                 for k in range(RESPONSES_PER_PROMPT)]
        record_generations(db, prompt_id=prompt.id, policy_version_id=0, responses=texts,
                           gen_params={"bench": True}, pairs=combos)
    db.dispose()
    return names


def run_server(root: str, db_url: str | None, port: int) -> None:
    """Child process: the same server `rlhf serve` runs."""
    ws = open_workspace(root, db_url)
    serve(ws, ws.database(), AppServices(), host="127.0.0.1", port=port, block=True, quiet=True)


def wait_until_up(url: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"the app did not answer at {url} within {timeout_s:.0f} s")


async def annotate(url: str, name: str, fn_index: dict[str, int], judgments: int, think_ms: float,
                   rng: random.Random, start_delay_s: float) -> AnnotatorResult:
    result = AnnotatorResult()
    await asyncio.sleep(start_delay_s)
    session_hash = f"bench{rng.getrandbits(40):x}"

    def body(api_name: str, data: list) -> dict:
        return {"data": data, "fn_index": fn_index[api_name], "session_hash": session_hash,
                "event_data": None, "trigger_id": None}

    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        login = await client.post("/login", data={"username": name, "password": PASSWORD})
        if login.status_code != 200:
            result.errors.append(f"login {login.status_code}")
            return result
        for _ in range(judgments):
            t0 = time.perf_counter()
            fetched = await client.post("/gradio_api/run/next_pair", json=body("next_pair", []))
            result.fetch_ms.append((time.perf_counter() - t0) * 1000)
            result.server_ms.append(fetched.json().get("duration", 0) * 1000 if fetched.status_code == 200 else 0)
            token = next((v for v in fetched.json().get("data", []) if isinstance(v, str) and TOKEN.fullmatch(v)),
                         None) if fetched.status_code == 200 else None
            if token is None:
                result.errors.append(f"fetch {fetched.status_code}: no pair")
                break
            if think_ms:
                await asyncio.sleep(rng.uniform(0.5, 1.5) * think_ms / 1000)
            endpoint = rng.choice(VERDICT_ENDPOINTS)
            strength = rng.choice([None, "slight", "clear", "strong"])
            t0 = time.perf_counter()
            submitted = await client.post(f"/gradio_api/run/{endpoint}",
                                          json=body(endpoint, [token, strength, "bench"]))
            result.submit_ms.append((time.perf_counter() - t0) * 1000)
            result.server_ms.append(submitted.json().get("duration", 0) * 1000 if submitted.status_code == 200 else 0)
            data = submitted.json().get("data") if submitted.status_code == 200 else None
            if data and any(isinstance(v, str) and (v.startswith("Saved:") or "already saved" in v) for v in data):
                result.acknowledged.append(int(token.split(":")[0]))
            else:
                result.errors.append(f"submit {submitted.status_code}: {str(data or submitted.text)[:120]}")
    return result


def percentiles(values: list[float]) -> str:
    if len(values) < 2:
        return "n/a"
    q = statistics.quantiles(values, n=100, method="inclusive")
    return f"p50 {q[49]:6.1f} ms   p95 {q[94]:6.1f} ms   p99 {q[98]:6.1f} ms   max {max(values):6.1f} ms"


async def run_load(url: str, names: list[str], judgments: int, think_ms: float, ramp_s: float,
                   seed: int) -> tuple[list, float]:
    config = httpx.get(url + "config", timeout=10)
    if config.status_code == 401 or "dependencies" not in config.text:
        # /config needs a login when auth is on; any bench user will do.
        with httpx.Client(base_url=url) as c:
            c.post("/login", data={"username": names[0], "password": PASSWORD})
            config = c.get("/config")
    fn_index = {d["api_name"]: d["id"] for d in config.json()["dependencies"] if d.get("api_name")}
    rng = random.Random(seed)
    started = time.perf_counter()
    results = await asyncio.gather(*[
        annotate(url, name, fn_index, judgments, think_ms, random.Random(rng.getrandbits(64)), i * ramp_s / len(names))
        for i, name in enumerate(names)
    ])
    return results, time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--annotators", type=int, default=50)
    parser.add_argument("--judgments-each", type=int, default=20)
    parser.add_argument("--think-ms", type=float, default=5000.0,
                        help="mean pause between seeing a pair and judging it (uniform 0.5x-1.5x); 0 = flat out")
    parser.add_argument("--ramp-s", type=float, default=None,
                        help="annotators start evenly spread over this many seconds (default: one think time)")
    parser.add_argument("--db", default=None, help="database URL (default: a SQLite file in a temp workspace)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    run_tag = f"{int(time.time())}{random.Random().getrandbits(16):04x}"
    with tempfile.TemporaryDirectory(prefix="rlhf-labeling-load-") as tmp:
        root = Path(tmp) / "ws"
        wanted = args.annotators * args.judgments_each + 4 * args.annotators
        t0 = time.perf_counter()
        names = prepare(root, args.db, args.annotators, wanted, run_tag)
        print(f"prepared {len(names)} annotators and >= {wanted} pairs in {time.perf_counter() - t0:.1f} s")

        port = free_port()
        url = f"http://127.0.0.1:{port}/"
        server = mp.get_context("spawn").Process(target=run_server, args=(str(root), args.db, port), daemon=True)
        server.start()
        try:
            wait_until_up(url)
            ramp_s = args.think_ms / 1000 if args.ramp_s is None else args.ramp_s
            results, elapsed = asyncio.run(
                run_load(url, names, args.judgments_each, args.think_ms, ramp_s, args.seed))
        finally:
            server.terminate()
            server.join(10)

        ws = open_workspace(root, args.db)
        db = ws.database()
        mine = set(names)
        rows = [r for r in judgment_rows(db, kinds=("train", "eval_vs_base")) if r.annotator in mine]
        db.dispose()

    stored = Counter((r.pair_id, r.annotator) for r in rows)
    acknowledged = {(pair_id, name) for name, res in zip(names, results) for pair_id in res.acknowledged}
    lost = len(acknowledged - set(stored))
    duplicated = sum(n - 1 for n in stored.values())
    unacknowledged = len(set(stored) - acknowledged)
    per_pair = Counter(r.pair_id for r in rows)
    over_judged = sum(1 for n in per_pair.values() if n > 1)  # k = 1 in this workspace
    fetches = [ms for r in results for ms in r.fetch_ms]
    submits = [ms for r in results for ms in r.submit_ms]
    errors = [e for r in results for e in r.errors]
    handler = [ms for r in results for ms in r.server_ms]

    backend = "PostgreSQL" if args.db and args.db.startswith("postgres") else "SQLite"
    print(f"\n{args.annotators} annotators x {args.judgments_each} judgments, think {args.think_ms:.0f} ms, "
          f"{backend}, server in its own process, clients over HTTP (httpx, asyncio)")
    print(f"wall time           {elapsed:8.2f} s")
    print(f"judgments/s         {len(acknowledged) / elapsed:8.1f}   ({len(acknowledged)} acknowledged)")
    print(f"fetch  (next_pair)  {percentiles(fetches)}   n={len(fetches)}")
    print(f"submit (judge_*)    {percentiles(submits)}   n={len(submits)}")
    print(f"  of which handler  {percentiles(handler)}   (server-side, both kinds)")
    print(f"lost                {lost:8d}")
    print(f"duplicated          {duplicated:8d}")
    print(f"rows not acked      {unacknowledged:8d}")
    print(f"pairs judged twice  {over_judged:8d}   (k=1)")
    print(f"errors              {len(errors):8d}" + (f"   first: {errors[0]}" if errors else ""))
    return 0 if lost == 0 and duplicated == 0 and not errors else 1


if __name__ == "__main__":
    raise SystemExit(main())
