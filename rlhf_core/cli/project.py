"""`rlhf` commands for the project itself: init, status and the systems leaderboard."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from rlhf_core.cli.app import DbOpt, WorkspaceOpt, app, open_db


@app.command()
def init(
    workspace: WorkspaceOpt = None,
    db: DbOpt = None,
    model: Annotated[str, typer.Option(help="'default' (embedded SmolLM2-135M) or a local model dir")] = "default",
    profile: Annotated[str | None, typer.Option(
        help="Size sampling and training for this machine: auto (gpu with CUDA, else cpu), cpu or gpu. "
             "New workspaces default to auto; on an existing one, rewrites those settings")] = None,
) -> None:
    """Create a workspace (config, database, folders). On an existing workspace: upgrade only, never wipe."""
    from rlhf_core.workspace import init_workspace

    if model != "default" and not (Path(model).expanduser() / "config.json").is_file():
        raise typer.BadParameter(f"{model} is not a Hugging Face model directory (no config.json)",
                                 param_hint="--model")
    if profile is not None and profile not in ("auto", "cpu", "gpu"):
        raise typer.BadParameter("must be auto, cpu or gpu", param_hint="--profile")
    ws, created = init_workspace(workspace, model=model, db_url=db, profile=profile, new_profile="auto")
    if created:
        typer.echo(f"Created workspace {ws.root}")
        typer.echo(f"  config:   {ws.config_path}")
        typer.echo(f"  database: {ws.database().display_url()}")
        typer.echo(f"  model:    {ws.config.model.name}")
        typer.echo(f"  profile:  {ws.config.profile} (sampling and training sized for this machine)")
        typer.echo("Next: rlhf prompts import FILE, rlhf user add NAME --role annotator, rlhf serve")
    elif profile is not None:
        typer.echo(f"Workspace {ws.root}: profile {ws.config.profile} written to rlhf.toml; schema is up to date.")
    else:
        typer.echo(f"Workspace {ws.root} already exists; schema is up to date, nothing else changed.")


@app.command()
def status(
    workspace: WorkspaceOpt = None,
    db: DbOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output with stable keys")] = False,
) -> None:
    """Counts, versions, jobs, and each annotator's accuracy on control pairs and agreement with the majority."""
    from rlhf_core.data.annotator_quality import annotator_quality_report
    from rlhf_core.data.leaderboard import outside_data_status
    from rlhf_core.judges.figures import judge_figures
    from rlhf_core.service.dashboard import overoptimization_status
    from storage import demonstration_counts, status_counts

    ws, database = open_db(workspace, db)
    info = status_counts(database)
    info["annotator_quality"] = annotator_quality_report(database)
    info.update(outside_data_status(database))
    info["demonstrations"] = demonstration_counts(database)  # stage 1: {demonstrations, written, edits, imported}
    info["overoptimization"] = overoptimization_status(database)  # the rule's alarm on the current version
    info["judges"] = judge_figures(database)  # AI judges: kappa with people, control accuracy, left bias
    if as_json:
        typer.echo(json.dumps(info, indent=2, default=str))
        return
    c = info["counts"]
    typer.echo(f"workspace  {ws.root}")
    typer.echo(f"database   {database.display_url()}")
    typer.echo(f"prompts    {c['prompts']}")
    typer.echo(f"samples    {c['samples']}")
    typer.echo(f"pairs      {c['pairs']} ({c['pairs_open']} open)")
    typer.echo(f"judgments  {c['judgments']}")
    quality = info["annotator_quality"]
    for name, n in info["judgments_per_annotator"].items():
        typer.echo(f"  {name:<20} {n:<8}{_quality_line(quality.get(name))}".rstrip())
    v = info["versions"]
    rm = "none yet" if v["reward_model"] is None else f"v{v['reward_model']}"
    typer.echo(f"policy     v{v['policy']}{' (base model)' if v['policy'] == 0 else ''}")
    over = info["overoptimization"]
    if over["version"] != v["policy"]:
        typer.echo(f"current    v{over['version']} (served; the next round starts from it)")
    if over["alarm"]:
        typer.echo(f"ALARM      over-optimization: {over['reason']}")
    typer.echo(f"reward     {rm}")
    jobs = info["jobs"]
    running = ", ".join(f"#{j['id']} {j['kind']} {j['progress']:.0%}" for j in jobs["running"]) or "none"
    typer.echo(f"jobs       running: {running}; queued: {jobs['queued']}")
    for source, n in info["imported_pairs"].items():
        typer.echo(f"imported   {source}: {n['pairs']} pairs ({n['open']} open)")
    for source, n in info["prior_preferences"].items():
        typer.echo(f"prior      {source}: {n} judgments (reward training only; never served)")
    d = info["demonstrations"]
    if d["demonstrations"]:
        typer.echo(f"demos      {d['demonstrations']} ({d['written']} written on the page, {d['edits']} of them edits; "
                   f"{d['imported']} imported); rlhf train-sft fine-tunes on them")
    for name, f in info["judges"].items():
        kappa = "n/a" if f["kappa"] is None else f"{f['kappa']:.2f} [{f['kappa_ci'][0]:.2f}, {f['kappa_ci'][1]:.2f}]"
        typer.echo(f"judge      {name} ({f['kind']}{'' if f['active'] else ', disabled'}): kappa with people {kappa} "
                   f"on {f['shared']}; control {_share(f['control_accuracy'], f['control_ci'], f['control_judgments'])}"
                   f"; left bias {'n/a' if f['left_bias'] is None else format(f['left_bias'], '.0%')}")
    if info["leaderboard"]["systems"]:
        best = info["leaderboard"]["systems"][0]
        typer.echo(f"leaderboard {len(info['leaderboard']['systems'])} systems, first {best['system']} "
                   f"({best['rating']:.0f}); rlhf leaderboard for the table")


def _share(rate: float | None, ci: list[float] | None, n: int) -> str:
    if rate is None:
        return "n/a"
    return f"{rate:.0%} [{ci[0]:.0%}, {ci[1]:.0%}] of {n}"


def _quality_line(q: dict | None) -> str:
    """Control accuracy and majority agreement with their 95% intervals, for `rlhf status`."""
    if q is None:
        return ""
    line = (f"control {_share(q['control_accuracy'], q['control_ci'], q['control_judgments'])}; "
            f"majority {_share(q['majority_agreement'], q['majority_ci'], q['majority_items'])}")
    if q.get("eta") is not None:  # CrowdBT's estimates with the current reward model
        line += f"; η {q['eta']:.2f}, left bias {q['left_bias']:.0%}"
    return line


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
