"""`rlhf simulate` and `rlhf demo`: simulated annotators (a gold preference and a crowd of the registry's kinds)
judging through the same storage path as people, and the whole loop end to end in a fresh workspace."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Annotated

import typer

from rlhf_core.cli.app import DbOpt, WorkspaceOpt, algo_option, app, open_db
from rlhf_core.registry import CROWD_KINDS, GOLDS

AlgoOpt = algo_option()


@app.command()
def simulate(
    workspace: WorkspaceOpt = None,
    db: DbOpt = None,
    annotators: Annotated[int | None, typer.Option(help="Honest simulated annotators (users sim-1..sim-K; default 3)")
                          ] = None,
    crowd: Annotated[str | None, typer.Option(
        help=f"A crowd instead, e.g. honest:3,random:1,left:1 (kinds: {', '.join(CROWD_KINDS)}; users "
             "sim-<kind>-<i>)")] = None,
    judgments: Annotated[int, typer.Option(help="Judgments to record in total")] = 100,
    gold: Annotated[str, typer.Option(help=f"Hidden preference: {', '.join(GOLDS)}")] = "sentiment",
    noise: Annotated[float, typer.Option(help="Probability of flipping a decisive label")] = 0.0,
    keyword: Annotated[str | None, typer.Option(help="The keyword for --gold keyword")] = None,
    target: Annotated[int | None, typer.Option(help="The length in characters for --gold concise (default 150)")
                      ] = None,
    seed: Annotated[int, typer.Option(help="Random seed")] = 0,
) -> None:
    """Judge pending pairs with simulated annotators, through the same storage path as people."""
    from rlhf_core.simulator.simulate import SimulationError, simulate_annotators

    if annotators is not None and crowd is not None:
        raise SimulationError("give --annotators (honest ones) or --crowd, not both")
    ws, database = open_db(workspace, db)
    options = {key: value for key, value in (("keyword", keyword), ("target", target)) if value is not None} or None
    result = simulate_annotators(database, annotators=3 if annotators is None else annotators, judgments=judgments,
                                 gold=gold, noise=noise, seed=seed, gold_options=options,
                                 control_rate=ws.config.labeling.control_rate, crowd=crowd)
    typer.echo(f"Recorded {result.judgments} judgments ({result.ties} ties, {result.flipped} against the gold); "
               f"stopped: {result.stopped}.")
    for name, n in result.per_annotator.items():
        typer.echo(f"  {name:<16} {n:<6} {result.kinds[name]}")


@app.command()
def demo(
    workspace: Annotated[Path | None, typer.Option("--workspace", "-w",
                                                   help="Where to build the demo (default: a new temp dir)")] = None,
    rounds: Annotated[int, typer.Option(help="Rounds to run")] = 3,
    judgments: Annotated[int, typer.Option(help="Simulated judgments per round")] = 120,
    gold: Annotated[str, typer.Option(help="Hidden preference of the simulated annotators")] = "sentiment",
    algo: AlgoOpt = None,
    model: Annotated[str, typer.Option(help="'default' (SmolLM2-135M-Instruct) or a local model dir")] = "default",
    full: Annotated[bool, typer.Option(help="Use rlhf.toml's training sizes even on a CPU")] = False,
) -> None:
    """The whole loop on the default model with simulated annotators, in a fresh workspace."""
    import torch

    from rlhf_core.simulator.demo import LoopSettings, format_table, prepare_workspace, run_loop, shrink_for_cpu

    root = workspace or Path(tempfile.mkdtemp(prefix="rlhf-demo-"))
    ws = prepare_workspace(root, model=model)
    typer.echo(f"Demo workspace: {ws.root} (built-in prompts; model {ws.config.model.name})")
    if not full and not torch.cuda.is_available():
        shrink_for_cpu(ws.config)
        typer.echo("No GPU: using smaller sampling and training sizes so a round takes minutes, not hours "
                   "(--full uses rlhf.toml as is).")
    settings = LoopSettings(rounds=rounds, judgments_per_round=judgments, gold=gold, algo=algo)
    reports = []
    for report in run_loop(ws, settings, progress=True, log=typer.echo):
        reports.append(report)
        typer.echo(format_table(reports))
    typer.echo(f"\nInspect it: rlhf status -w {ws.root}; label yourself: rlhf serve -w {ws.root}")
