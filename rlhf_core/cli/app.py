"""The typer app and what every command shares: the `--workspace`/`--db` options, the `--algo` option (a round
algorithm of the registry), the shell user as the actor of audited actions, and logging to the workspace.

Command modules import `app` from here and register on it. `main` imports the plugins named in `$RLHF_PLUGINS`
(comma-separated modules that register their own entries: algorithms, golds, ...) before the command modules,
so the commands' choices and help see their kinds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from rlhf_core.registry import round_algorithms, spoken_list

app = typer.Typer(no_args_is_help=True, add_completion=False, help="rlhf-loop: an online human-feedback loop.")

WorkspaceOpt = Annotated[
    Path | None,
    typer.Option("--workspace", "-w", help="Workspace directory (default: $RLHF_WORKSPACE or .)", show_default=False),
]
DbOpt = Annotated[str | None, typer.Option("--db", help="Database URL (sqlite:///FILE or postgresql://...)")]


def open_ws(workspace: Path | None, db: str | None):  # noqa: ANN201 - avoids importing at CLI start
    from rlhf_core.workspace import open_workspace

    return open_workspace(workspace, db)


def open_db(workspace: Path | None, db: str | None):  # noqa: ANN201
    """The workspace and its database, reached with `recovery.connect_attempts` tries (a database still starting
    is waited for, each wait said on stderr) and brought to the newest schema."""
    ws = open_ws(workspace, db)
    database = ws.database()
    attempts = ws.config.recovery.connect_attempts

    def say(attempt: int, wait: float, reason: str) -> None:
        typer.echo(f"database {database.display_url()} not reachable ({reason}); trying again in {wait:.0f} s "
                   f"(attempt {attempt} of {attempts})", err=True)

    database.wait_until_reachable(attempts, on_retry=say)
    database.upgrade()
    return ws, database


def shell():  # noqa: ANN201 - rlhf_core.service.actor.Actor, imported when a command runs
    """The actor of a shell command's audited actions: `cli:<login name>`."""
    from rlhf_core.service.actor import Actor

    return Actor.shell()


def _round_algorithm(value: str | None) -> str | None:
    if value is not None and value not in round_algorithms():
        raise typer.BadParameter(f"must be {spoken_list(round_algorithms())}")
    return value


def algo_option() -> object:
    """The `--algo` option of a command module, made when the module is imported (after the plugins, so their
    algorithms are in its help): a round algorithm of the registry, checked when the command runs."""
    return Annotated[str | None, typer.Option(
        "--algo", callback=_round_algorithm, help=f"{spoken_list(round_algorithms())} (default: policy.algo in "
                                                  "rlhf.toml)")]


VerboseOpt = Annotated[bool, typer.Option(
    "--verbose", "-v", help="Also print library warnings and INFO logs (they always go to logs/ in the workspace)")]
LOGS_DIR = "logs"
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def route_logs(root: Path, command: str, verbose: bool = False) -> Path:
    """Send Python logging (INFO and up) and warnings to `<root>/logs/<command>.log`, and to the console
    only with `verbose`: the console of a long-running command shows what a person needs (its URL,
    passwords, progress, one-line errors), not the libraries' chatter. Libraries that keep handlers of
    their own (transformers) are made to pass their records here instead; their progress bars show only
    with `verbose`. Call before importing the model stack: bitsandbytes logs a warning at import."""
    import logging
    import os
    import sys

    path = root / LOGS_DIR / f"{command}.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    handlers: list[logging.Handler] = [logging.FileHandler(path, encoding="utf-8")]
    if verbose:
        handlers.append(logging.StreamHandler(sys.stderr))
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT, handlers=handlers, force=True)
    logging.captureWarnings(True)
    if not verbose:
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_default_handler()
    hf_logging.enable_propagation()
    if not verbose:
        hf_logging.disable_progress_bar()
    return path
