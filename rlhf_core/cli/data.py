"""`rlhf` commands for data: simulated annotators, dataset export, and the end-to-end demo."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Annotated

import typer

from rlhf_core.cli.app import DbOpt, WorkspaceOpt, app, open_db
from rlhf_core.loop.crowd import ANNOTATOR_KINDS


@app.command()
def simulate(
    workspace: WorkspaceOpt = None,
    db: DbOpt = None,
    annotators: Annotated[int | None, typer.Option(help="Honest simulated annotators (users sim-1..sim-K; default 3)")
                          ] = None,
    crowd: Annotated[str | None, typer.Option(
        help=f"A crowd instead, e.g. honest:3,random:1,left:1 (kinds: {', '.join(ANNOTATOR_KINDS)}; users "
             "sim-<kind>-<i>)")] = None,
    judgments: Annotated[int, typer.Option(help="Judgments to record in total")] = 100,
    gold: Annotated[str, typer.Option(help="Hidden preference: sentiment, longer, shorter or keyword")] = "sentiment",
    noise: Annotated[float, typer.Option(help="Probability of flipping a decisive label")] = 0.0,
    keyword: Annotated[str | None, typer.Option(help="The keyword for --gold keyword")] = None,
    seed: Annotated[int, typer.Option(help="Random seed")] = 0,
) -> None:
    """Judge pending pairs with simulated annotators, through the same storage path as people."""
    from rlhf_core.loop.simulate import SimulationError, simulate_annotators

    if annotators is not None and crowd is not None:
        raise SimulationError("give --annotators (honest ones) or --crowd, not both")
    ws, database = open_db(workspace, db)
    options = {"keyword": keyword} if keyword else None
    result = simulate_annotators(database, annotators=3 if annotators is None else annotators, judgments=judgments,
                                 gold=gold, noise=noise, seed=seed, gold_options=options,
                                 control_rate=ws.config.labeling.control_rate, crowd=crowd)
    typer.echo(f"Recorded {result.judgments} judgments ({result.ties} ties, {result.flipped} against the gold); "
               f"stopped: {result.stopped}.")
    for name, n in result.per_annotator.items():
        typer.echo(f"  {name:<16} {n:<6} {result.kinds[name]}")


@app.command()
def export(
    out: Annotated[Path, typer.Option("--out", help="Output directory")],
    workspace: WorkspaceOpt = None,
    db: DbOpt = None,
    what: Annotated[str, typer.Option("--what", help="preferences (judged pairs) or demos (SFT demonstrations: "
                                                     "prompt / completion)")] = "preferences",
    fmt: Annotated[str, typer.Option("--format", help="hf (datasets.save_to_disk), jsonl or parquet")] = "hf",
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
) -> None:
    """Export judged pairs as a TRL-ready preference dataset (prompt / chosen / rejected), or with --what demos
    the demonstrations as a TRL SFT dataset (prompt / completion)."""
    from rlhf_core.data.export import export_preferences

    if what not in ("preferences", "demos"):
        raise typer.BadParameter("must be preferences or demos", param_hint="--what")
    if what == "demos":
        if round is not None or min_agreement is not None or include_ties or min_annotator_accuracy is not None:
            raise typer.BadParameter("--round, --min-agreement, --include-ties and --min-annotator-accuracy filter "
                                     "judged pairs; demonstrations take none of them", param_hint="--what demos")
        _export_demos(workspace, db, out, fmt=fmt, standard=standard, test_fraction=test_fraction,
                      overwrite=overwrite, anonymize=anonymize)
        return
    ws, database = open_db(workspace, db)
    if min_annotator_accuracy is None:
        min_annotator_accuracy = ws.config.reward.min_annotator_accuracy
    result = export_preferences(database, out, fmt=fmt, round=round, min_agreement=min_agreement,
                                include_ties=include_ties, test_fraction=test_fraction,
                                conversational=not standard, overwrite=overwrite, anonymize=anonymize,
                                min_annotator_accuracy=min_annotator_accuracy, include_prior=include_prior)
    skipped = ", ".join(f"{k}: {v}" for k, v in result.skipped.items() if v) or "none"
    typer.echo(f"Exported {result.n_rows} pairs ({result.n_train} train, {result.n_test} test) to {result.path} "
               f"as {result.format}; skipped {skipped}.")
    if min_annotator_accuracy > 0:
        typer.echo(f"{result.n_low_accuracy_annotators} annotator(s) below control accuracy "
                   f"{min_annotator_accuracy:g}: listed in the low_accuracy_annotators column.")


def _export_demos(workspace, db, out: Path, *, fmt: str, standard: bool, test_fraction: float,  # noqa: ANN001
                  overwrite: bool, anonymize: bool) -> None:
    from rlhf_core.data.demonstration_files import export_demonstrations

    _, database = open_db(workspace, db)
    result = export_demonstrations(database, out, fmt=fmt, test_fraction=test_fraction, conversational=not standard,
                                   overwrite=overwrite, anonymize=anonymize)
    typer.echo(f"Exported {result.n_rows} demonstrations ({result.n_train} train, {result.n_test} test) to "
               f"{result.path} as {result.format}: TRL's SFTTrainer trains on the train split as it is.")


demos_app = typer.Typer(no_args_is_help=True, help="Demonstrations: good answers for supervised fine-tuning.")
app.add_typer(demos_app, name="demos")


@demos_app.command("import")
def demos_import(
    file: Annotated[Path, typer.Argument(help="JSONL, CSV or a datasets directory in TRL's SFT formats: messages "
                                              "(ending with the answer), or prompt + completion")],
    workspace: WorkspaceOpt = None,
    db: DbOpt = None,
    name: Annotated[str | None, typer.Option(help="Source name stored with them (default: the file name)")] = None,
) -> None:
    """Import demonstrations in one transaction: a bad record refuses the whole file; repeats are skipped."""
    from rlhf_core.cli.app import cli_actor
    from rlhf_core.data.demonstration_files import import_demonstration_file
    from storage import demonstration_counts

    ws, database = open_db(workspace, db)
    result = import_demonstration_file(database, file, imported_by=cli_actor(), name=name,
                                       max_prompt_chars=ws.config.labeling.max_prompt_chars)
    total = demonstration_counts(database)["demonstrations"]
    typer.echo(f"Imported {result.added} demonstrations ({result.duplicates} duplicates skipped; "
               f"{result.prompts_added} new train prompts); {total} in all. Fine-tune on them: rlhf train-sft")


@app.command()
def demo(
    workspace: Annotated[Path | None, typer.Option("--workspace", "-w",
                                                   help="Where to build the demo (default: a new temp dir)")] = None,
    rounds: Annotated[int, typer.Option(help="Rounds to run")] = 3,
    judgments: Annotated[int, typer.Option(help="Simulated judgments per round")] = 120,
    gold: Annotated[str, typer.Option(help="Hidden preference of the simulated annotators")] = "sentiment",
    algo: Annotated[str | None, typer.Option(help="ppo, grpo or dpo (default: policy.algo, grpo)")] = None,
    model: Annotated[str, typer.Option(help="'default' (SmolLM2-135M-Instruct) or a local model dir")] = "default",
    full: Annotated[bool, typer.Option(help="Use rlhf.toml's training sizes even on a CPU")] = False,
) -> None:
    """The whole loop on the default model with simulated annotators, in a fresh workspace."""
    import torch

    from rlhf_core.loop.demo import LoopSettings, format_table, prepare_workspace, run_loop, shrink_for_cpu

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
