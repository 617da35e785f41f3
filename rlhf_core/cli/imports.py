"""`rlhf <kind> import FILE` for every import kind of `rlhf_core.registry.IMPORT_KINDS` (prompts, controls, pairs,
preferences, demos): each reads JSONL, CSV or a datasets directory through the one reader, goes through the
action service (`rlhf_core.service.imports`, the operator page's path) and prints its one-sentence outcome. A bad
record refuses the whole file with one line naming the file, the line and the fix."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from rlhf_core.cli.app import DbOpt, WorkspaceOpt, app, open_db, shell
from rlhf_core.registry import IMPORT_KINDS, PREFERENCE_FORMATS


def _group(kind: str, help: str) -> typer.Typer:
    group = typer.Typer(no_args_is_help=True, help=help)
    app.add_typer(group, name=IMPORT_KINDS[kind].command)
    return group


def _run(kind: str, file: Path, workspace: Path | None, db: str | None, **options: Any) -> None:
    from rlhf_core.service.imports import import_file

    ws, database = open_db(workspace, db)
    typer.echo(import_file(ws, database, kind, file, shell(), **options).summary)


def _file_help(kind: str) -> str:
    return f"JSONL, CSV or a datasets directory: {IMPORT_KINDS[kind].schema.describe()}"


NameOpt = Annotated[str | None, typer.Option("--name", help="Source recorded with them (default: the file's name)")]

prompts_app = _group("prompts", "Manage prompts.")
controls_app = _group("controls", "Control pairs: known answers that measure annotators.")
pairs_app = _group("pairs", "Pairs of responses written outside the loop, judged like ours.")
preferences_app = _group("preferences", "Prior judgments from existing preference datasets.")
demos_app = _group("demonstrations", "Demonstrations: good answers for supervised fine-tuning.")


@prompts_app.command("import")
def prompts_import(
    file: Annotated[Path, typer.Argument(help=_file_help("prompts"))],
    workspace: WorkspaceOpt = None,
    db: DbOpt = None,
    split: Annotated[str, typer.Option(help="train or eval")] = "train",
) -> None:
    """Import prompts in one transaction; duplicates are skipped and counted."""
    if split not in ("train", "eval"):
        raise typer.BadParameter("must be train or eval", param_hint="--split")
    _run("prompts", file, workspace, db, source=file.name, split=split)


@controls_app.command("import")
def controls_import(
    file: Annotated[Path, typer.Argument(help=_file_help("controls") + " (a, b, tie or both_bad)")],
    workspace: WorkspaceOpt = None,
    db: DbOpt = None,
) -> None:
    """Import control pairs in one transaction: a bad line refuses the whole file; repeats are skipped."""
    _run("controls", file, workspace, db)


@pairs_app.command("import")
def pairs_import(
    file: Annotated[Path, typer.Argument(help=_file_help("pairs"))],
    workspace: WorkspaceOpt = None,
    db: DbOpt = None,
    name: NameOpt = None,
) -> None:
    """Import pairs to be judged like sampled ones (k judgments each); a bad record refuses the whole file."""
    _run("pairs", file, workspace, db, source=name)


@preferences_app.command("import")
def preferences_import(
    file: Annotated[Path, typer.Argument(help="JSONL, CSV or a datasets dir in TRL's standard or conversational "
                                              "preference form, or HH-style chosen/rejected transcripts")],
    workspace: WorkspaceOpt = None,
    db: DbOpt = None,
    name: NameOpt = None,
    weight: Annotated[float, typer.Option(help="Weight of each judgment relative to a human one (times "
                                               "reward.prior_weight)")] = 1.0,
    fmt: Annotated[str, typer.Option("--format", help=f"auto (each record's form), {', '.join(PREFERENCE_FORMATS)}"
                                   )] = "auto",
) -> None:
    """Import prior judgments: used by reward-model training, never shown to annotators."""
    _run("preferences", file, workspace, db, source=name, weight=weight, format=fmt)


@demos_app.command("import")
def demos_import(
    file: Annotated[Path, typer.Argument(help="JSONL, CSV or a datasets directory in TRL's SFT formats: messages "
                                              "(ending with the answer), or prompt + completion")],
    workspace: WorkspaceOpt = None,
    db: DbOpt = None,
    name: NameOpt = None,
) -> None:
    """Import demonstrations in one transaction: a bad record refuses the whole file; repeats are skipped."""
    _run("demonstrations", file, workspace, db, source=name)
