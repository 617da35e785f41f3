"""`rlhf` commands for step labels and the process reward model: train it on the step labels (`train-prm`, a job
through the action service like `train-rm`) and label sampled responses' steps with simulated annotators
(`simulate-steps`, a step gold of the registry). Labeling by people happens on the labeling page
(`labeling.mode = "steps"` or `labeling.step_sets`); the labels leave with `rlhf export --what steps`."""

from __future__ import annotations

from typing import Annotated

import typer

from rlhf_core.cli.app import DbOpt, WorkspaceOpt, app, open_db
from rlhf_core.cli.jobs import run_job_now
from rlhf_core.registry import STEP_GOLDS


@app.command("train-prm")
def train_prm(workspace: WorkspaceOpt = None, db: DbOpt = None) -> None:
    """Train the process reward model (its own LoRA adapter and a step head on the base) on the step labels."""
    run_job_now(workspace, db, "train_prm", {})


@app.command("simulate-steps")
def simulate_steps(
    workspace: WorkspaceOpt = None,
    db: DbOpt = None,
    labels: Annotated[int, typer.Option(help="Responses to label in total")] = 50,
    annotators: Annotated[int, typer.Option(help="Simulated annotators (users sim-steps-1..K)")] = 2,
    gold: Annotated[str, typer.Option(help="; ".join(f"{g.name}: {g.help}" for g in STEP_GOLDS.values()))
                    ] = "arithmetic",
    noise: Annotated[float, typer.Option(help="Probability of replacing a step's label by another")] = 0.0,
    seed: Annotated[int, typer.Option(help="Random seed")] = 0,
) -> None:
    """Label the steps of sampled responses with simulated annotators, through the labeling page's storage path."""
    from rlhf_core.simulator.steps import simulate_step_labels

    ws, database = open_db(workspace, db)
    result = simulate_step_labels(database, ws.config, labels=labels, annotators=annotators, gold=gold, noise=noise,
                                  seed=seed)
    typer.echo(f"Labeled the steps of {result.labels} responses ({result.steps} steps, {result.bad} bad, "
               f"{result.flipped} against the gold); stopped: {result.stopped}.")
