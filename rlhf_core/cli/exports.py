"""`rlhf export`: a dataset of every export kind of `rlhf_core.registry.EXPORT_KINDS` (preferences, demos), through
the action service (`rlhf_core.service.exports`: the operator page's path, its checks and its audit row)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from rlhf_core.cli.app import DbOpt, WorkspaceOpt, app, open_db, shell
from rlhf_core.registry import EXPORT_FORMATS, EXPORT_KINDS, spoken_list


@app.command()
def export(
    out: Annotated[Path, typer.Option("--out", help="Output directory")],
    workspace: WorkspaceOpt = None,
    db: DbOpt = None,
    what: Annotated[str, typer.Option("--what", help="; ".join(f"{k.name}: {k.help}" for k in EXPORT_KINDS.values())
                                      )] = "preferences",
    fmt: Annotated[str, typer.Option("--format", help=f"{spoken_list(EXPORT_FORMATS)} (hf: datasets.save_to_disk)"
                                     )] = "hf",
    round: Annotated[int | None, typer.Option("--round", help="Only pairs sampled in this round")] = None,
    min_agreement: Annotated[float | None, typer.Option(help="Minimum share of judgments agreeing")] = None,
    include_ties: Annotated[bool, typer.Option(help="Export tie pairs too (flagged tie=true)")] = False,
    standard: Annotated[bool, typer.Option(help="Plain-text prompt/chosen/rejected instead of messages")] = False,
    test_fraction: Annotated[float, typer.Option(help="Share of prompts held out as the test split")] = 0.1,
    overwrite: Annotated[bool, typer.Option(help="Replace a non-empty output directory")] = False,
    anonymize: Annotated[bool, typer.Option(help="Replace usernames with annotator-1, annotator-2, ...")] = False,
    min_annotator_accuracy: Annotated[float | None, typer.Option(
        help="Mark annotators below this control-pair accuracy (default: reward.min_annotator_accuracy)")] = None,
    include_prior: Annotated[bool, typer.Option(
        help="Also export the prior judgments of imported preference datasets (column prior = true)")] = False,
    exclude_ai: Annotated[bool, typer.Option(
        help="Leave AI judges' judgments out (column annotator_kind says human, ai or human+ai)")] = False,
) -> None:
    """Export judged pairs as a TRL-ready preference dataset (prompt / chosen / rejected), or with --what demos
    the demonstrations as a TRL SFT dataset (prompt / completion)."""
    from rlhf_core.service.exports import export_dataset, option_refusal

    if what not in EXPORT_KINDS:
        raise typer.BadParameter(f"must be {spoken_list(tuple(EXPORT_KINDS))}", param_hint="--what")
    options = dict(round=round, min_agreement=min_agreement, include_ties=include_ties, standard=standard,
                   test_fraction=test_fraction, overwrite=overwrite, anonymize=anonymize,
                   min_annotator_accuracy=min_annotator_accuracy, include_prior=include_prior, exclude_ai=exclude_ai)
    if (refused := option_refusal(what, options)) is not None:  # a usage error: exit 2, as for a bad --format
        raise typer.BadParameter(refused, param_hint=f"--what {what}")
    ws, database = open_db(workspace, db)
    outcome = export_dataset(ws, database, what, out, shell(), fmt=fmt, **options)
    typer.echo(outcome.summary)
