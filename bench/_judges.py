"""`bench/reward_learning.py --judge SPEC`: people and a simulated AI judge, through the real judge path (the
`openai` kind and its official client against an OpenAI-compatible server on loopback that answers from the gold:
`rlhf_core.simulator.judge_endpoint`, judge runs and routing of `rlhf_core.judges`, the worker's reward training).

SPEC is `accuracy=0.75` or `accuracy=0.75,left_bias=0.5` (each answer is the gold's side with probability
`accuracy`; with probability `left_bias` it is "A", whatever the pair), optionally with `runs=every/routed/alone`
(which of the three runs below, default all). For each SPEC, on fresh copies of the pool workspace that hold every
pool pair (`--max-pairs` per prompt, random), the reward model's gold accuracy for:

- `people-<N>`: N = the last budget human judgments alone (once, shared by every SPEC);
- `people-<n>+judge`: n = the first budget human judgments plus the judge on every pair;
- `people-<n>-routed+judge`: the judge first, with `labeling.route = "judge_uncertain"` (people get the pairs it is
  unsure of first, and a `labeling.judge_share` sample of the rest), then n human judgments;
- `judge-alone`: the judge's judgments only.

`--hf-judge MODEL` ("default": the embedded SmolLM2-135M-Instruct) also runs that local LM as an `hf` judge on the
pairs people judged in `people-<N>` and reports its Cohen's kappa with them (`rlhf_core.judges.figures`).
"""

from __future__ import annotations

import copy
import shutil
import time
from dataclasses import replace
from typing import Any

from rlhf_core.judges.figures import judge_figures
from rlhf_core.judges.run import run_judge
from rlhf_core.service.actor import Actor
from rlhf_core.service.judges import add_judge
from rlhf_core.simulator.judge_endpoint import JudgeBehaviour, SimulatedJudgeEndpoint
from rlhf_core.simulator.simulate import simulate_annotators
from rlhf_core.training.reward_service import run_reward_training

ACTOR = Actor("bench", "cli")
ALL_PAIRS = 100_000


RUNS = {"every": ("+judge", "all"), "routed": ("-routed+judge", "judge_uncertain"), "alone": ("judge-alone", "all")}


def parse_judge_spec(spec: str) -> tuple[dict[str, float], list[str]]:
    """"accuracy=0.75,left_bias=0.5,runs=routed" -> ({"accuracy": 0.75, "left_bias": 0.5}, ["routed"]) (runs: all
    three by default); ValueError naming a bad part."""
    values, runs = {"accuracy": 1.0, "left_bias": 0.0}, list(RUNS)
    for part in filter(None, (p.strip() for p in spec.split(","))):
        key, _, value = part.partition("=")
        if key == "runs" and value and all(r in RUNS for r in value.split("/")):
            runs = [r for r in RUNS if r in value.split("/")]
            continue
        if key not in values or not value:
            raise ValueError(f"--judge {spec!r}: {part!r} is not accuracy=P, left_bias=P or runs=R[/R...] "
                             f"(R: {', '.join(RUNS)})")
        values[key] = float(value)
        if not 0.0 <= values[key] <= 1.0:
            raise ValueError(f"--judge {spec!r}: {key} must be between 0 and 1")
    return values, runs


def _workspace(ctx: Any, name: str, route: str):  # noqa: ANN401, ANN202
    root = ctx.base_root / f"judge-{name}"
    shutil.copytree(ctx.base_root / "pool", root, ignore=shutil.ignore_patterns("adapters"))
    mws = replace(ctx.ws, root=root, config=copy.deepcopy(ctx.ws.config))
    mws.config.labeling.route = route
    mws.config.judges.requests_per_second, mws.config.judges.backoff_seconds = 10_000.0, 0.0
    mws.config.judges.pairs_per_run, mws.config.judges.max_requests = ALL_PAIRS, 2 * ALL_PAIRS
    mdb = mws.database()
    ctx.offer(mws, mdb)
    return mws, mdb


def _measured(ctx: Any, mws, mdb, name: str, t0: float) -> dict[str, Any]:  # noqa: ANN001, ANN401
    ctx.stack.reset_adapter("reward")
    run_reward_training(mws, mdb, ctx.stack, progress=False)
    row = {"run": name, **ctx.measure(), "seconds": round(time.perf_counter() - t0, 1)}
    print(f"  {name:<34} gold accuracy {row['accuracy']:.3f}, ECE {row['ece']:.3f} ({row['seconds']} s)", flush=True)
    return row


def _judged_by(ctx: Any, mws, mdb, spec: dict[str, float], seed: int) -> dict[str, Any]:  # noqa: ANN001, ANN401
    with SimulatedJudgeEndpoint(JudgeBehaviour(gold=ctx.gold, seed=seed, **spec)) as endpoint:
        add_judge(mdb, "judge", "openai", ACTOR, base_url=endpoint.base_url, model="simulated")
        return run_judge(mws, mdb, "judge").metrics()


def judge_scenarios(ctx: Any, specs: list[str], hf_judge: str | None = None) -> list[dict[str, Any]]:  # noqa: ANN401
    """The four runs per SPEC (see the module docstring); `ctx` has base_root, ws, stack, gold, noise, budgets,
    offer(ws, db) (every pool pair stored) and measure() (gold accuracy and ECE of the stack's reward model)."""
    few, many = ctx.budgets[0], ctx.budgets[-1]
    rows: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    mws, mdb = _workspace(ctx, "people", "all")
    simulate_annotators(mdb, annotators=3, judgments=many, gold=ctx.gold, noise=ctx.noise, seed=1, progress=False)
    rows.append(_measured(ctx, mws, mdb, f"people-{many}", t0))
    if hf_judge:
        add_judge(mdb, "hf-judge", "hf", ACTOR, model=hf_judge)
        t0 = time.perf_counter()
        run_judge(mws, mdb, "hf-judge", pairs=ALL_PAIRS)
        figures = judge_figures(mdb)["hf-judge"]
        rows.append({"run": f"hf judge {hf_judge}: kappa with simulated people", **figures,
                     "seconds": round(time.perf_counter() - t0, 1)})
        print(f"  hf judge {hf_judge}: kappa {figures['kappa']} {figures['kappa_ci']} on {figures['shared']} shared "
              f"judgments, left bias {figures['left_bias']} ({rows[-1]['seconds']} s)", flush=True)
    for i, spec_text in enumerate(specs):
        spec, runs = parse_judge_spec(spec_text)
        label = "judge " + ",".join(p for p in spec_text.split(",") if not p.strip().startswith("runs="))
        for run in runs:
            scenario, route = RUNS[run]
            people = 0 if run == "alone" else few
            t0 = time.perf_counter()
            mws, mdb = _workspace(ctx, f"{i}{scenario}", route)
            metrics = _judged_by(ctx, mws, mdb, spec, seed=i)
            if people:
                simulate_annotators(mdb, annotators=3, judgments=people, gold=ctx.gold, noise=ctx.noise, seed=1,
                                    progress=False)
            name = f"{label} | " + ("judge alone" if not people else f"people-{people}{scenario}")
            row = _measured(ctx, mws, mdb, name, t0)
            row.update({k: metrics[k] for k in ("pairs", "ties", "people_first", "closed_to_people", "requests")})
            rows.append(row)
    return rows


def print_judge_table(rows: list[dict[str, Any]]) -> None:
    print(f"\n{'run':<60}{'gold accuracy':>14}{'ECE':>8}")
    for row in rows:
        if "accuracy" in row:
            print(f"{row['run']:<60}{row['accuracy']:>14.3f}{row['ece']:>8.3f}")
        else:
            print(f"{row['run']:<60} kappa {row['kappa']} {row['kappa_ci']}, left bias {row['left_bias']}")
