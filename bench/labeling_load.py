"""Load test of the labeling app: N simulated annotators fetch pairs and submit judgments through
the same HTTP endpoints the page's events use, against `rlhf serve --no-worker` process(es), with
the trivial-Gradio floor measured first in the same run as the reference.

    python bench/labeling_load.py                          # 50 annotators x 20 judgments, SQLite
    python bench/labeling_load.py --think-ms 0 --annotators 20   # flat out: throughput at saturation
    python bench/labeling_load.py --processes 2 --annotators 200 --db postgresql://user@127.0.0.1/rlhf_bench

Each simulated annotator pauses 5 s (uniform 2.5-7.5 s) between seeing a pair and judging it;
`--think-ms 0` removes the pause and measures the saturated server. Each annotator logs in
(`POST /login`), then loops: fetch its pair (`POST /gradio_api/run/next_pair`, the page-load event),
pause, submit a random verdict (`POST /gradio_api/run/judge_*`, the button events). The page shows
the next pair from the submit's answer; the bench fetches again to time fetches, so a judgment
costs two events here.

The load generator runs in its own process(es) (`--client-processes`); their CPU use is reported,
since on a small machine they compete with the server for cores. Server time per event is the
server processes' CPU time over the load phase divided by the events they answered; the floor is
the same figure for a Gradio app with login whose one `queue=False` event returns three strings.
`--processes N` (N > 1) starts N app processes behind nginx configured by deploy/nginx/rlhf-loop.conf.
Afterwards the database is read back: lost = acknowledged judgments without a row; duplicated =
rows beyond one per (pair, annotator); over k = pairs with more judgments than they wanted.

New annotator sessions (`--sessions N`, after each load phase, on the warm server): N logins, then N
page sessions as a browser opens the page (`GET /` with its config inside, the theme's CSS, then the
page's load events under a fresh session hash, the first pair among them); server CPU per login and
per page session, for ours and for the floor.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository and bench/ importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    sys.path.insert(0, str(Path(__file__).resolve().parent))

from _load_clients import ClientResult, LoadPlan, SessionFigures, measure_new_sessions, start_clients  # noqa: E402
from _load_servers import Servers, start_app, start_floor  # noqa: E402
from sqlmodel import func, select  # noqa: E402

from rlhf_core.config import dump_config  # noqa: E402
from rlhf_core.workspace import init_workspace, open_workspace  # noqa: E402
from storage import Annotator, Judgment, Pair, add_prompts, create_annotator, list_prompts, record_generations  # noqa: E402

PASSWORD = "bench-password-1"
RESPONSES_PER_PROMPT = 4  # 6 pairs per prompt


def prepare(root: Path, db_url: str | None, annotators: int, pairs: int, k: int, run_tag: str) -> list[str]:
    """A workspace with `annotators` users and at least `pairs` open pairs (k judgments each) of fake
    texts. The pool top-up is off: the bench measures labeling, not sampling."""
    ws, _ = init_workspace(root, db_url=db_url)
    ws.config.labeling.judgments_per_pair = k
    ws.config.sampling.pool_min_open_pairs = 0
    ws.config_path.write_text(dump_config(ws.config), encoding="utf-8")
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
        texts = [(f"Answer {n} to prompt {prompt.id}. " + "Some filler text. " * 20, 60)
                 for n in range(RESPONSES_PER_PROMPT)]
        record_generations(db, prompt_id=prompt.id, policy_version_id=0, responses=texts, gen_params={"bench": True},
                           pairs=combos, judgments_wanted=k)
    db.dispose()
    return names


def percentiles(values: list[float]) -> dict[str, float | None]:
    if len(values) < 2:
        return {"p50": None, "p95": None, "p99": None, "max": max(values) if values else None}
    q = statistics.quantiles(values, n=100, method="inclusive")
    return {"p50": round(q[49], 2), "p95": round(q[94], 2), "p99": round(q[98], 2), "max": round(max(values), 2)}


def loadavg() -> str:
    return Path("/proc/loadavg").read_text().split(" ")[:3].__str__()


def run_phase(servers: Servers, names: list[str], args: argparse.Namespace) -> dict:
    """Drive `servers` with all annotators; latencies, throughput, CPU of servers and clients."""
    ramp_s = args.think_ms / 1000 if args.ramp_s is None else args.ramp_s
    plan = LoadPlan(url=servers.url, password=PASSWORD, judgments=args.judgments_each, think_ms=args.think_ms,
                    ramp_s=ramp_s, seed=args.seed)
    pool = start_clients(names, plan, args.client_processes)
    pool.wait_ready()
    load_before = loadavg()
    server_cpu0, each0, t0 = servers.cpu_seconds(), servers.app_cpu_each(), time.perf_counter()
    pool.start()
    results: list[ClientResult] = pool.results()
    elapsed = time.perf_counter() - t0
    server_cpu = servers.cpu_seconds() - server_cpu0
    each = [after - before for before, after in zip(each0, servers.app_cpu_each())]
    app_cpu = sum(each)
    events = sum(r.events for r in results)
    acknowledged = [a for r in results for a in r.acknowledged]
    client_cpu = sum(r.cpu_s for r in results)
    errors = [e for r in results for e in r.errors]
    return {
        "wall_s": round(elapsed, 2),
        "events": events,
        "judgments_acknowledged": len(acknowledged),
        "judgments_per_s": round(len(acknowledged) / elapsed, 2),
        "fetch_ms": percentiles([ms for r in results for ms in r.fetch_ms]),
        "submit_ms": percentiles([ms for r in results for ms in r.submit_ms]),
        "handler_ms": percentiles([ms for r in results for ms in r.handler_ms]),
        "server_cpu_ms_per_event": round(1000 * app_cpu / max(events, 1), 3),
        "server_cpu_cores": round(server_cpu / elapsed, 3),
        "app_cpu_s_per_process": [round(c, 2) for c in each],
        "wall_ms_per_event": round(1000 * elapsed / max(events, 1), 3),
        "client_processes": len(results),
        "client_cpu_s": round(client_cpu, 2),
        "client_cpu_cores": round(client_cpu / elapsed, 3),
        "errors": len(errors),
        "first_error": errors[0] if errors else None,
        "loadavg_before": load_before,
        "loadavg_after": loadavg(),
        "_acknowledged": acknowledged,
    }


def read_back(root: Path, db_url: str | None, names: list[str], acknowledged: list[tuple[str, int]]) -> dict:
    db = open_workspace(root, db_url).database()
    with db.session() as s:
        rows = s.exec(select(Annotator.username, Judgment.pair_id)
                      .join(Annotator, Annotator.id == Judgment.annotator_id)
                      .where(Annotator.username.in_(names))).all()
        per_pair = s.exec(select(Pair.id, Pair.judgments_wanted, func.count(Judgment.id))
                          .join(Judgment, Judgment.pair_id == Pair.id).group_by(Pair.id, Pair.judgments_wanted)).all()
    db.dispose()
    stored = Counter((name, pair_id) for name, pair_id in rows)
    acked = set(acknowledged)
    return {"lost": len(acked - set(stored)), "duplicated": sum(n - 1 for n in stored.values()),
            "unacknowledged_rows": len(set(stored) - acked),
            "over_k": sum(1 for _, wanted, n in per_pair if n > wanted)}


def new_sessions(servers: Servers, names: list[str], args: argparse.Namespace) -> dict | None:
    """Server CPU per new annotator session on `servers` (see the module's docstring), or None with --sessions 0."""
    if args.sessions <= 0:
        return None
    figures: SessionFigures = measure_new_sessions(servers.url, names, PASSWORD, args.sessions,
                                                   servers.app_cpu_seconds)
    return vars(figures)


def print_sessions(s: dict | None) -> None:
    if s is not None:
        print(f"new session         login {s['login_ms']:.2f} + page {s['page_ms']:.2f} = {s['new_session_ms']:.2f} ms "
              f"server CPU   ({s['sessions']} sessions, {s['load_events']} load events; errors {s['errors']}"
              + (f", first: {s['first_error']}" if s["errors"] else "") + ")")


def line(label: str, p: dict) -> str:
    if p["p50"] is None:
        return f"{label:<20}n/a"
    return (f"{label:<20}p50 {p['p50']:7.1f} ms   p95 {p['p95']:7.1f} ms   p99 {p['p99']:7.1f} ms   "
            f"max {p['max']:7.1f} ms")


def print_phase(name: str, r: dict) -> None:
    print(f"\n[{name}]  load average before {r['loadavg_before']} after {r['loadavg_after']}")
    print(f"wall time           {r['wall_s']:8.2f} s   ({r['events']} events)")
    print(f"judgments/s         {r['judgments_per_s']:8.1f}   ({r['judgments_acknowledged']} acknowledged)")
    print(line("fetch  (next_pair)", r["fetch_ms"]))
    print(line("submit (judge_*)", r["submit_ms"]))
    print(line("  handler (server)", r["handler_ms"]))
    print(f"server CPU/event    {r['server_cpu_ms_per_event']:8.2f} ms   (server processes use "
          f"{r['server_cpu_cores']:.2f} cores; wall {r['wall_ms_per_event']:.2f} ms/event)")
    print(f"load generator      {r['client_cpu_cores']:8.2f} cores  ({r['client_cpu_s']:.1f} CPU s in "
          f"{r['client_processes']} process(es))")
    print(f"errors              {r['errors']:8d}" + (f"   first: {r['first_error']}" if r["errors"] else ""))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--annotators", type=int, default=50)
    parser.add_argument("--judgments-each", type=int, default=20)
    parser.add_argument("--think-ms", type=float, default=5000.0,
                        help="mean pause between seeing a pair and judging it (uniform 0.5x-1.5x); 0 = flat out")
    parser.add_argument("--ramp-s", type=float, default=None,
                        help="annotators start evenly spread over this many seconds (default: one think time)")
    parser.add_argument("--db", default=None, help="database URL (default: a SQLite file in a temp workspace)")
    parser.add_argument("--processes", type=int, default=1, help="app processes; > 1 puts nginx in front")
    parser.add_argument("--client-processes", type=int, default=1, help="load generator processes")
    parser.add_argument("--k", type=int, default=1, help="judgments wanted per pair")
    parser.add_argument("--no-floor", action="store_true", help="skip the trivial-Gradio reference")
    parser.add_argument("--sessions", type=int, default=200,
                        help="new annotator sessions measured on each server after its load phase (0: none)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    from _smoke import add_smoke_option, apply_smoke  # bench/_smoke.py

    add_smoke_option(parser)  # --smoke: 3 annotators x 2 judgments, flat out, 3 new sessions, the floor included
    args = parser.parse_args(argv)
    apply_smoke(args, annotators=3, judgments_each=2, think_ms=0.0, ramp_s=None, no_floor=False, sessions=3)

    run_tag = f"{int(time.time())}{random.Random().getrandbits(16):04x}"
    report: dict = {"args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}}
    if args.db:
        report["args"]["db"] = args.db.split("@")[-1]
    with tempfile.TemporaryDirectory(prefix="rlhf-labeling-load-") as tmp:
        root, logs = Path(tmp) / "ws", Path(tmp) / "logs"
        logs.mkdir()
        wanted = args.annotators * args.judgments_each + 4 * args.annotators
        t0 = time.perf_counter()
        names = prepare(root, args.db, args.annotators, -(-wanted // args.k), args.k, run_tag)
        print(f"prepared {len(names)} annotators and >= {wanted} judgment slots in {time.perf_counter() - t0:.1f} s")
        if not args.no_floor:
            servers = start_floor(names, PASSWORD, logs)
            try:
                report["floor"] = run_phase(servers, names, args)
                report["floor"]["new_session"] = new_sessions(servers, names, args)
            finally:
                servers.stop()
            report["floor"].pop("_acknowledged")
            print_phase("trivial Gradio app with login (the floor)", report["floor"])
            print_sessions(report["floor"]["new_session"])
        servers = start_app(root, args.db, args.processes, logs)
        try:
            ours = run_phase(servers, names, args)
            ours["new_session"] = new_sessions(servers, names, args)
        finally:
            servers.stop()
        ours.update(read_back(root, args.db, names, ours.pop("_acknowledged")))
        report["ours"] = ours

    backend = "PostgreSQL" if args.db and args.db.startswith("postgres") else "SQLite"
    print_phase(f"rlhf serve x{args.processes}, {backend}" + (", nginx" if args.processes > 1 else ""), ours)
    print_sessions(ours["new_session"])
    print(f"lost {ours['lost']}   duplicated {ours['duplicated']}   over k {ours['over_k']}   "
          f"rows not acknowledged {ours['unacknowledged_rows']}")
    if "floor" in report:
        floor = report["floor"]
        report["ratio_server_cpu_per_event"] = round(ours["server_cpu_ms_per_event"]
                                                     / max(floor["server_cpu_ms_per_event"], 1e-9), 3)
        report["ratio_wall_per_event"] = round(ours["wall_ms_per_event"] / max(floor["wall_ms_per_event"], 1e-9), 3)
        print(f"\nours / floor: server CPU per event x{report['ratio_server_cpu_per_event']:.2f}, "
              f"wall time per event x{report['ratio_wall_per_event']:.2f} (target <= 1.3 at saturation)")
        if ours["new_session"] and floor["new_session"]:
            mine, theirs = ours["new_session"], floor["new_session"]
            report["ratio_page_session_cpu"] = round(mine["page_ms"] / max(theirs["page_ms"], 1e-9), 3)
            report["ratio_new_session_cpu"] = round(mine["new_session_ms"] / max(theirs["new_session_ms"], 1e-9), 3)
            print(f"ours / floor: server CPU per new page session x{report['ratio_page_session_cpu']:.2f}, "
                  f"with its login x{report['ratio_new_session_cpu']:.2f}")
    print(f"\n{args.annotators} annotators x {args.judgments_each} judgments, think {args.think_ms:.0f} ms, "
          f"{args.client_processes} load-generator process(es); load average now {loadavg()}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    ok = ours["lost"] == 0 and ours["duplicated"] == 0 and ours["over_k"] == 0 and ours["errors"] == 0
    ok = ok and all(phase["new_session"] is None or phase["new_session"]["errors"] == 0
                    for phase in (ours, report.get("floor", {"new_session": None})))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
