"""Chaos over whole rounds (issue 41): does the loop survive its processes dying and its database restarting?

    python bench/chaos_loop.py                 # 3 rounds, 20 annotators over HTTP, PostgreSQL; 3 SIGKILLs each of
                                               # the server and the worker and 2 PostgreSQL restarts, seeded
    python bench/chaos_loop.py --kills 5 --pg-restarts 3 --seed 7 --json chaos.json
    python bench/chaos_loop.py --smoke         # a tiny model: 1 round, 4 annotators, one fault of each kind

The same loop runs twice, each time in a fresh workspace on a fresh database of a throw-away PostgreSQL server on
loopback: first without chaos (the baseline), then with a chaos driver that, at seeded random moments within the
baseline's duration, SIGKILLs the app server (`rlhf serve --no-worker`, started again a second later) or the worker
(`rlhf worker`, started again at once, as systemd would), or restarts PostgreSQL (`pg_ctl -m immediate`: a crash
and WAL recovery). Simulated annotators judge through the labeling page's HTTP API all along; rounds start by
themselves every --round-every judgments (loop.auto_round_every). A phase ends when --rounds rounds are done.

Per phase it prints: rounds completed; acknowledged judgments lost (the page said "Saved" but the database has
no such judgment: must be 0); judgments duplicated (one annotator twice on a pair) and pairs judged more than k
times; versions inconsistent between database and files (`rlhf doctor`'s check: must be 0); errors an annotator
saw (a failed request, by cause); jobs queued again after their worker died and trainings resumed from a
checkpoint; and the phase's time, against the baseline's. Everything listens on 127.0.0.1 and stops by itself.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _chaos import PASSWORD, Annotators, ChaosDriver, LoopProcesses, PostgresServer, chaos_plan  # noqa: E402
from _smoke import add_smoke_option, apply_smoke, round_settings  # noqa: E402
from sqlalchemy import text  # noqa: E402
from sqlalchemy.exc import OperationalError  # noqa: E402

from rlhf_core.config import apply_overrides, dump_config  # noqa: E402
from rlhf_core.data.prompt_files import read_prompt_file  # noqa: E402
from rlhf_core.ops.doctor import check_versions  # noqa: E402
from rlhf_core.simulator.demo import demo_prompt_files  # noqa: E402
from rlhf_core.workspace import Workspace, init_workspace  # noqa: E402
from storage import Database, add_prompts, create_annotator, enqueue_job  # noqa: E402


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "n/a"


def prepare(root: Path, url: str, args: argparse.Namespace) -> Workspace:
    """A workspace on `url` with the built-in prompts, the annotators, and the first pairs queued for sampling."""
    ws, _ = init_workspace(root, model=args.model, db_url=url, new_profile="auto")
    cfg = ws.config
    cfg.labeling.judgments_per_pair, cfg.loop.auto_round_every = args.k, args.round_every
    cfg.sampling.pool_min_open_pairs, cfg.sampling.pool_refill_pairs = 0, args.pairs  # rounds sample the next pairs
    cfg.loop.min_reward_confidence = 0.0  # every round updates the policy: the chaos reaches every phase of it
    cfg.recovery.retry_backoff_s, cfg.recovery.checkpoint_every = 1.0, args.checkpoint_every
    apply_overrides(cfg, args.set)
    ws.config_path.write_text(dump_config(cfg))
    db = Database(url)
    train, _ = demo_prompt_files()
    add_prompts(db, read_prompt_file(train, max_prompt_chars=cfg.labeling.max_prompt_chars), split="train",
                source="demo")
    for name in annotator_names(args.annotators):
        create_annotator(db, name, PASSWORD)
    enqueue_job(db, "sample", {"pairs": args.pairs}, max_attempts=cfg.recovery.job_attempts)  # the worker's first job
    db.dispose()
    return ws


def annotator_names(n: int) -> list[str]:
    return [f"annotator{i:02d}" for i in range(n)]


def _query(db: Database, sql: str) -> list[Any]:
    """A read that waits out a PostgreSQL restart."""
    for _ in range(120):
        try:
            with db.transaction() as conn:
                return list(conn.execute(text(sql)))
        except OperationalError:
            time.sleep(1.0)
    raise RuntimeError("the database stayed unreachable for two minutes")


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def rounds_done(db: Database) -> int:
    return _query(db, "SELECT count(*) FROM job WHERE kind = 'round' AND status = 'done'")[0][0]


def run_phase(name: str, args: argparse.Namespace, postgres: PostgresServer, work: Path, logs: Path,
              plan: list | None) -> dict[str, Any]:
    url = postgres.create_database(f"chaos_{name.replace(' ', '_')}")
    ws = prepare(work / name.replace(" ", "-"), url, args)
    db = Database(url)
    loop = LoopProcesses(ws.root, logs)
    loop.start_server()
    loop.start_worker()
    annotators = Annotators(loop.url, annotator_names(args.annotators), args.think_s, args.seed)
    started = time.monotonic()
    annotators.start()
    driver = ChaosDriver(plan, loop, postgres, pg_mode=args.pg_restart_mode) if plan else None
    if driver is not None:
        driver.start()
    try:  # until the rounds are done and every fault of the plan has been carried out
        while ((done := rounds_done(db)) < args.rounds or (driver is not None and not driver.done)) \
                and time.monotonic() - started < args.timeout:
            time.sleep(2.0)
        seconds = time.monotonic() - started
    finally:
        annotators.join()
        if driver is not None:
            driver.stop.set()
            driver.join(600)
        loop.stop()
    figures = count(db, ws, annotators, done, seconds)
    figures.update(phase=name, timed_out=done < args.rounds, server_starts=loop.starts["server"],
                   worker_starts=loop.starts["worker"],
                   events=[{"at_s": round(e.at_s, 1), "kind": e.kind, "done_at_s": _rounded(e.done_at_s),
                            "down_s": _rounded(e.down_s)} for e in plan or []],
                   driver_failures=driver.failures if driver else [])
    db.dispose()
    return figures


def count(db: Database, ws: Workspace, annotators: Annotators, rounds: int, seconds: float) -> dict[str, Any]:
    saved = {(name, pair) for name, pair in _query(db, "SELECT a.username, j.pair_id FROM judgment j JOIN annotator a "
                                                       "ON a.id = j.annotator_id")}
    acknowledged = annotators.stats.acknowledged
    duplicated = _query(db, "SELECT coalesce(sum(n - 1), 0) FROM (SELECT count(*) AS n FROM judgment GROUP BY "
                            "pair_id, annotator_id HAVING count(*) > 1) d")[0][0]
    over_k = _query(db, "SELECT count(*) FROM pair p WHERE p.kind = 'train' AND (SELECT count(*) FROM judgment j "
                        "WHERE j.pair_id = p.id) > p.judgments_wanted")[0][0]
    requeued = _query(db, "SELECT count(*) FROM job WHERE attempts > 1")[0][0]
    metrics = [json.loads(m) for (m,) in _query(db, "SELECT metrics_json FROM policyversion UNION ALL "
                                                    "SELECT metrics_json FROM rewardmodelversion")]
    inconsistent = [f.what for f in check_versions(ws, db) if not f.ok]
    return {"rounds": rounds, "judgments": len(saved), "acknowledged": len(acknowledged),
            "lost": len(set(acknowledged) - saved), "duplicated": int(duplicated), "over_k": int(over_k),
            "inconsistent": len(inconsistent), "inconsistent_what": inconsistent,
            "annotator_errors": annotators.stats.episodes, "failed_requests": sum(annotators.stats.errors.values()),
            "errors_by_cause": dict(annotators.stats.errors.most_common()), "requeued_jobs": int(requeued),
            "resumed_trainings": sum(1 for m in metrics if (m.get("resumed_from_step") or 0) > 0),
            "seconds": round(seconds, 1)}


def table(phases: list[dict[str, Any]]) -> str:
    base = phases[0]["seconds"] if phases and phases[0]["phase"] == "no chaos" else None
    lines = [f"{'phase':<9} {'rounds':>6} {'judgments':>9} {'lost':>5} {'dup.':>5} {'over k':>6} {'inconsist.':>10} "
             f"{'ann. errors':>11} {'re-queued':>9} {'resumed':>7} {'time (s)':>14}"]
    for p in phases:
        ratio = f" (x{p['seconds'] / base:.2f})" if base and p["phase"] != "no chaos" else ""
        lines.append(f"{p['phase']:<9} {p['rounds']:>6} {p['judgments']:>9} {p['lost']:>5} {p['duplicated']:>5} "
                     f"{p['over_k']:>6} {p['inconsistent']:>10} {p['annotator_errors']:>11} {p['requeued_jobs']:>9} "
                     f"{p['resumed_trainings']:>7} {p['seconds']:>7.0f}{ratio:>7}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3, help="rounds each phase runs to")
    parser.add_argument("--annotators", type=int, default=20)
    parser.add_argument("--k", type=int, default=2, help="judgments wanted per pair")
    parser.add_argument("--pairs", type=int, default=60, help="pairs sampled first and by each round")
    parser.add_argument("--round-every", type=int, default=100, help="a round starts after this many judgments")
    parser.add_argument("--think-s", type=float, default=2.0, help="mean seconds an annotator looks at a pair")
    parser.add_argument("--kills", type=int, default=3, help="SIGKILLs of the server, and of the worker")
    parser.add_argument("--pg-restarts", type=int, default=2, help="PostgreSQL restarts")
    parser.add_argument("--pg-restart-mode", choices=["immediate", "fast"], default="immediate")
    parser.add_argument("--checkpoint-every", type=int, default=2, help="recovery.checkpoint_every")
    parser.add_argument("--chaos-window", type=float, default=None,
                        help="seconds the faults fall within (default: the baseline's duration)")
    parser.add_argument("--no-baseline", action="store_true", help="only the chaos phase (needs --chaos-window)")
    parser.add_argument("--model", default="default", help="default or a local model directory")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a setting of rlhf.toml")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=3 * 3600.0, help="seconds a phase may take")
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    parser.add_argument("--keep", action="store_true", help="keep the workspaces and logs (printed at the end)")
    add_smoke_option(parser)
    args = parser.parse_args(argv)
    apply_smoke(args, tiny_model="model", rounds=1, annotators=4, k=2, pairs=6, round_every=6, think_s=0.2, kills=1,
                pg_restarts=1, timeout=900.0)
    if args.smoke:
        args.set = round_settings(args.set)
    if args.no_baseline and args.chaos_window is None:
        parser.error("--no-baseline needs --chaos-window SECONDS")

    work = Path(tempfile.mkdtemp(prefix="rlhf-chaos-"))
    logs = work / "logs"
    logs.mkdir()
    for folder in (work, logs):  # the PostgreSQL server (as postgres, when we are root) writes its log there
        folder.chmod(0o755)
    postgres = PostgresServer(logs)
    print(f"PostgreSQL on 127.0.0.1:{postgres.port}; {args.annotators} annotators, {args.rounds} rounds, k={args.k}, "
          f"a round every {args.round_every} judgments; load average {loadavg()}", flush=True)
    phases: list[dict[str, Any]] = []
    try:
        window = args.chaos_window
        if not args.no_baseline:
            phases.append(run_phase("no chaos", args, postgres, work, logs, None))
            window = window or phases[0]["seconds"]
            print(f"no chaos: {phases[0]['rounds']} rounds in {phases[0]['seconds']:.0f} s", flush=True)
        plan = chaos_plan(args.seed, (0.1 * window, 0.9 * window), args.kills, args.pg_restarts)
        phases.append(run_phase("chaos", args, postgres, work, logs, plan))
    finally:
        postgres.stop()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    chaos = phases[-1]
    print(table(phases))
    kinds = Counter(e["kind"] for e in chaos["events"])
    print(f"chaos: {kinds['server']} server SIGKILLs, {kinds['worker']} worker SIGKILLs, {kinds['postgres']} "
          f"PostgreSQL restarts ({args.pg_restart_mode}), seed {args.seed}: "
          + ", ".join(f"{e['kind']} at {e['done_at_s'] or e['at_s']:.0f} s (back after {e['down_s'] or 0:.0f} s)"
                      for e in chaos["events"]))
    print(f"errors annotators saw under chaos: {chaos['annotator_errors']} (a run of failed requests, retried every "
          f"2 s, counts once); failed requests by cause: "
          + (", ".join(f"{cause} {n}" for cause, n in chaos["errors_by_cause"].items()) or "none"))
    for failure in chaos["driver_failures"]:
        print(f"chaos driver: {failure}")
    for what in chaos["inconsistent_what"]:
        print(f"inconsistent: {what}")
    ok = all(p["lost"] == 0 and p["inconsistent"] == 0 and not p["timed_out"] for p in phases)
    print(f"verdict: lost {chaos['lost']} (must be 0), inconsistent {chaos['inconsistent']} (must be 0), "
          f"{chaos['rounds']} rounds done (of {args.rounds} wanted): {'PASS' if ok else 'FAIL'}; load average "
          f"{loadavg()}")
    if args.keep:
        print(f"workspaces and logs kept in {work}")
    if args.json:
        args.json.write_text(json.dumps({"phases": phases, "args": {k: v for k, v in vars(args).items() if k not in (
            "json",)}}, indent=2, default=str))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
