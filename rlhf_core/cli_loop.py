"""`rlhf` commands that use the model: sampling, serving, training, rounds, export, demo."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from rlhf_core.cli import DbOpt, WorkspaceOpt, app, open_db


@app.command()
def sample(
    workspace: WorkspaceOpt = None,
    db: DbOpt = None,
    pairs: Annotated[Optional[int], typer.Option(help="Pairs to create (default: sampling.pool_refill_pairs)")] = None,
    per_prompt: Annotated[Optional[int], typer.Option(help="Responses per prompt, >= 2")] = None,
    split: Annotated[str, typer.Option(help="Prompt split to sample for")] = "train",
) -> None:
    """Sample response pairs from the current policy for prompts that need them."""
    from rlhf_core.runtime import load_stack
    from rlhf_core.sampling import sample_pairs

    ws, database = open_db(workspace, db)
    typer.echo(f"Loading model {ws.config.model.name} ...")
    stack = load_stack(ws)
    result = sample_pairs(ws, database, stack, n_pairs=pairs, per_prompt=per_prompt, split=split)
    if result.prompts == 0:
        typer.echo("No prompts need pairs: import prompts with `rlhf prompts import FILE`.")
        return
    typer.echo(
        f"Policy v{result.policy_version}: {result.samples} responses for {result.prompts} prompts -> "
        f"{result.pairs} pairs ({result.identical_skipped} identical and {result.empty_skipped} empty responses "
        "not paired)."
    )
