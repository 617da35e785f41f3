"""`rlhf rewards check`: every reward function and the reward model on a version's responses, as a table, so a
verifier is tried on live samples before it trains anything (`rlhf_core.service.rewards_check`)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Annotated

import typer

from rlhf_core.cli.app import DbOpt, WorkspaceOpt, app, open_db

rewards_app = typer.Typer(no_args_is_help=True, help="Reward functions: try them before they train anything.")
app.add_typer(rewards_app, name="rewards")


def _cell(value: float | None) -> str:
    return "—" if value is None else f"{value:.3f}"


def _clip(text: str, width: int) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[:max(1, width - 1)] + "…"


@rewards_app.command("check")
def check(
    workspace: WorkspaceOpt = None,
    db: DbOpt = None,
    version: Annotated[str, typer.Option(help="Policy version number, or 'latest' (the current one)")] = "latest",
    prompts: Annotated[Path | None, typer.Option("--prompts", help="A prompt file (its columns too) for the "
                                                                   "version to answer; default: its stored samples")]
    = None,
    limit: Annotated[int, typer.Option(help="Responses to score (the newest stored samples, or the file's first)")]
    = 20,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object: the rows and the summary")] = False,
) -> None:
    """Run the reward functions and the reward model on a version's responses and print each score and the
    combined one (reward.combine), then each component's mean."""
    from rlhf_core.service.rewards_check import check_rewards

    if not (version == "latest" or version.lstrip("v").isdigit()):
        raise typer.BadParameter("a version number or 'latest'", param_hint="--version")
    ws, database = open_db(workspace, db)

    def load() -> object:
        from rlhf_core.training.workspace_stack import load_stack

        return load_stack(ws)

    result = check_rewards(ws, database, version=None if version == "latest" else int(version.lstrip("v")),
                           prompts_file=prompts, limit=limit, stack_loader=load)
    if as_json:
        typer.echo(json.dumps({"version": result.version, "source": result.source, "combine": result.combine,
                               "rows": [vars(r) for r in result.rows], "summary": result.summary(),
                               "notes": result.notes}, ensure_ascii=False))
        return
    width = shutil.get_terminal_size((160, 20)).columns
    names = result.components
    score_width = sum(max(8, len(n)) + 2 for n in names) + 10
    text = max(16, (width - score_width - 4) // 2)
    typer.echo(f"policy v{result.version}, {len(result.rows)} responses ({result.source}); combined = "
               f"{result.combine} of " + ", ".join(f"{w:g} x {n}" for n, w in zip(names, result.weights)))
    header = f"{'prompt':<{text}}  {'response':<{text}}  " + "  ".join(f"{n:>{max(8, len(n))}}" for n in names)
    typer.echo(header + f"  {'combined':>8}")
    for row in result.rows:
        cells = "  ".join(f"{_cell(row.scores[n]):>{max(8, len(n))}}" for n in names)
        typer.echo(f"{_clip(row.prompt, text):<{text}}  {_clip(row.response, text):<{text}}  {cells}  "
                   f"{row.combined:>8.3f}")
    typer.echo("")
    for item in result.summary():
        typer.echo(f"{item['name']}: mean {_cell(item['mean'])} over the {item['applies']} of {len(result.rows)} "
                   f"responses it applies to (weight {item['weight']:g})")
    for note in result.notes:
        typer.echo(f"note: {note}")
