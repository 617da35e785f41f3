"""`rlhf pairs import`, `rlhf preferences import` and `rlhf leaderboard`: data from outside the loop (pairs of
other systems' responses to judge, prior judgments from existing preference datasets) and the arena-style
ranking of the systems that judged pairs name."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from rlhf_core.cli.app import DbOpt, WorkspaceOpt, app, cli_actor, open_db

pairs_app = typer.Typer(no_args_is_help=True, help="Pairs of responses written outside the loop, judged like ours.")
preferences_app = typer.Typer(no_args_is_help=True, help="Prior judgments from existing preference datasets.")
app.add_typer(pairs_app, name="pairs")
app.add_typer(preferences_app, name="preferences")


@pairs_app.command("import")
def pairs_import(
    file: Annotated[Path, typer.Argument(help="JSONL, CSV or a datasets dir: prompt (or messages), response_a, "
                                              "response_b; optional system_a, system_b, metadata")],
    workspace: WorkspaceOpt = None,
    db: DbOpt = None,
    name: Annotated[str | None, typer.Option("--name", help="Source recorded with the pairs (default: the "
                                                            "file's name)")] = None,
) -> None:
    """Import pairs to be judged like sampled ones (k judgments each); a bad record refuses the whole file."""
    from rlhf_core.data.pair_files import import_name, import_pair_file
    from storage import open_pair_count, record_audit

    ws, database = open_db(workspace, db)
    k = ws.config.labeling.judgments_per_pair
    result = import_pair_file(database, file, source=name, judgments_wanted=k,
                              max_prompt_chars=ws.config.labeling.max_prompt_chars)
    source = import_name(name, file)
    record_audit(database, cli_actor(), "pairs_import", source=source, added=result.added,
                 duplicates=result.duplicates)
    typer.echo(f"Imported {result.added} pairs as '{source}' ({result.duplicates} duplicates skipped), "
               f"{k} judgment(s) wanted each; {open_pair_count(database)} pairs open in all.")


@preferences_app.command("import")
def preferences_import(
    file: Annotated[Path, typer.Argument(help="JSONL, CSV or a datasets dir in TRL's standard or conversational "
                                              "preference form, or HH-style chosen/rejected transcripts")],
    workspace: WorkspaceOpt = None,
    db: DbOpt = None,
    name: Annotated[str | None, typer.Option("--name", help="Source recorded with the judgments (default: the "
                                                            "file's name)")] = None,
    weight: Annotated[float, typer.Option(help="Weight of each judgment relative to a human one (times "
                                               "reward.prior_weight)")] = 1.0,
    fmt: Annotated[str, typer.Option("--format", help="auto, standard, conversational or hh")] = "auto",
) -> None:
    """Import prior judgments: used by reward-model training, never shown to annotators."""
    from rlhf_core.data.pair_files import import_name
    from rlhf_core.data.preference_files import import_preference_file
    from storage import prior_counts, record_audit

    ws, database = open_db(workspace, db)
    result = import_preference_file(database, file, source=name, weight=weight, fmt=fmt,
                                    max_prompt_chars=ws.config.labeling.max_prompt_chars)
    source = import_name(name, file)
    record_audit(database, cli_actor(), "preferences_import", source=source, weight=weight, added=result.added,
                 duplicates=result.duplicates)
    total = sum(prior_counts(database).values())
    typer.echo(f"Imported {result.added} prior judgments as '{source}' with weight {weight:g} "
               f"({result.duplicates} duplicates skipped); {total} in all, used by reward-model training at "
               f"reward.prior_weight = {ws.config.reward.prior_weight:g}.")


@app.command()
def leaderboard(
    workspace: WorkspaceOpt = None,
    db: DbOpt = None,
    baseline: Annotated[str | None, typer.Option(help="System the ratings and win rates are measured against "
                                                      "(default: v0, the base model, else the most judged)")] = None,
    rounds: Annotated[int, typer.Option(help="Bootstrap resamples for the 95% intervals")] = 200,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output")] = False,
) -> None:
    """Rank the systems that judged pairs name (imported systems, policy versions v0, v1, ...), arena-style."""
    from rlhf_core.data.leaderboard import format_leaderboard, system_leaderboard

    if rounds < 1:
        raise typer.BadParameter("must be at least 1", param_hint="--rounds")
    _, database = open_db(workspace, db)
    board = system_leaderboard(database, baseline=baseline, rounds=rounds)
    if as_json:
        typer.echo(json.dumps(board.as_dict(), indent=2))
        return
    for line in format_leaderboard(board):
        typer.echo(line)
