"""`rlhf judge add|list|disable|enable|run`: AI judges, annotators of kind `ai` (`rlhf_core.judges`). Changes go
through the action service (`rlhf_core.service.judges`, the operator page's rules and audit); a run is a `judge` job
that runs here until done, like `rlhf round`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from rlhf_core.cli.app import DbOpt, WorkspaceOpt, app, open_db, shell
from rlhf_core.registry import JUDGE_KINDS

judge_app = typer.Typer(no_args_is_help=True, help="AI judges: annotators of kind ai whose reliability is learned.")
app.add_typer(judge_app, name="judge")
KIND_HELP = "; ".join(f"{k.name}: {k.help}" for k in JUDGE_KINDS.values())


@judge_app.command("add")
def judge_add(
    name: str,
    kind: Annotated[str, typer.Option(help=f"{', '.join(JUDGE_KINDS.names())} ({KIND_HELP})")],
    workspace: WorkspaceOpt = None,
    db: DbOpt = None,
    base_url: Annotated[str | None, typer.Option(help="openai: the API's base URL, e.g. http://127.0.0.1:8000/v1")
                        ] = None,
    model: Annotated[str | None, typer.Option(help="openai: the endpoint's model name; hf: a causal LM directory (or "
                                                   "'default'); reward-model: a reward-model directory")] = None,
    api_key_env: Annotated[str | None, typer.Option(help="openai: the NAME of the environment variable holding the "
                                                         "API key (read at run time, never stored)")] = None,
    rubric: Annotated[Path | None, typer.Option(help="openai, hf: a rubric or constitution file (default: the "
                                                     "built-in principles)")] = None,
) -> None:
    """Add an AI judge (an account of kind ai: it never logs in and has no role)."""
    from rlhf_core.service.judges import add_judge

    _, database = open_db(workspace, db)
    judge = add_judge(database, name, kind, shell(), base_url=base_url, model=model, api_key_env=api_key_env,
                      rubric=rubric)
    typer.echo(f"Added judge {judge.name!r} ({judge.kind}). Run it with `rlhf judge run {judge.name}`.")


@judge_app.command("list")
def judge_list(workspace: WorkspaceOpt = None, db: DbOpt = None) -> None:
    """List the judges with their figures: kappa with people, control accuracy, left bias."""
    from rlhf_core.judges.figures import judge_figures
    from storage import list_judges

    _, database = open_db(workspace, db)
    figures = judge_figures(database)
    typer.echo(f"{'name':<20}{'kind':<14}{'active':<8}{'judged':>7}  {'kappa [95%]':<22}{'control':<10}left bias")
    for judge in list_judges(database):
        f = figures[judge.name]
        kappa = "n/a" if f["kappa"] is None else f"{f['kappa']:.2f} [{f['kappa_ci'][0]:.2f}, {f['kappa_ci'][1]:.2f}]"
        control = "n/a" if f["control_accuracy"] is None else f"{f['control_accuracy']:.0%}"
        left = "n/a" if f["left_bias"] is None else f"{f['left_bias']:.0%}"
        typer.echo(f"{judge.name:<20}{judge.kind:<14}{'yes' if judge.active else 'no':<8}{f['judgments']:>7}  "
                   f"{kappa:<22}{control:<10}{left}")


@judge_app.command("disable")
def judge_disable(name: str, workspace: WorkspaceOpt = None, db: DbOpt = None) -> None:
    """Disable a judge: its judgments stay, it takes no more runs."""
    from rlhf_core.service.judges import set_judge_enabled

    _, database = open_db(workspace, db)
    set_judge_enabled(database, name, False, shell())
    typer.echo(f"Disabled judge {name!r}.")


@judge_app.command("enable")
def judge_enable(name: str, workspace: WorkspaceOpt = None, db: DbOpt = None) -> None:
    """Enable a disabled judge again."""
    from rlhf_core.service.judges import set_judge_enabled

    _, database = open_db(workspace, db)
    set_judge_enabled(database, name, True, shell())
    typer.echo(f"Enabled judge {name!r}.")


@judge_app.command("run")
def judge_run(
    name: str,
    workspace: WorkspaceOpt = None,
    db: DbOpt = None,
    pairs: Annotated[int | None, typer.Option(help="Pairs to judge at most (default: judges.pairs_per_run)")] = None,
    max_requests: Annotated[int | None, typer.Option(help="Requests at most, retries included (default: "
                                                          "judges.max_requests)")] = None,
) -> None:
    """Judge pairs now, each in both orders: control pairs first, then open pairs, then pairs people judged."""
    from rlhf_core.cli.jobs import run_job_now

    run_job_now(workspace, db, "judge", {"judge": name, "pairs": pairs, "max_requests": max_requests})
