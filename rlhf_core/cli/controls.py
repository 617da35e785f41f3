"""`rlhf controls`: import control pairs (prompts with two responses and a known answer) that are
mixed into annotators' streams at `labeling.control_rate` to measure each annotator's accuracy."""

from __future__ import annotations

import getpass
from pathlib import Path
from typing import Annotated

import typer

from rlhf_core.cli.app import DbOpt, WorkspaceOpt, app, open_db

controls_app = typer.Typer(no_args_is_help=True, help="Control pairs: known answers that measure annotators.")
app.add_typer(controls_app, name="controls")


def _who() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):  # no user name in the environment or password database
        return "cli"


@controls_app.command("import")
def controls_import(
    file: Annotated[Path, typer.Argument(help="JSONL or CSV: prompt (or messages), response_a, response_b, "
                                              "expected (a, b, tie or both_bad)")],
    workspace: WorkspaceOpt = None,
    db: DbOpt = None,
) -> None:
    """Import control pairs in one transaction: a bad line refuses the whole file; repeats are skipped."""
    from rlhf_core.data.control_files import import_control_file
    from storage import count_control_pairs

    ws, database = open_db(workspace, db)
    result = import_control_file(database, file, imported_by=_who(),
                                 max_prompt_chars=ws.config.labeling.max_prompt_chars)
    rate = ws.config.labeling.control_rate
    typer.echo(f"Imported {result.added} control pairs ({result.duplicates} duplicates skipped); "
               f"{count_control_pairs(database)} in all, served as {rate:.0%} of each annotator's pairs "
               "(labeling.control_rate).")
