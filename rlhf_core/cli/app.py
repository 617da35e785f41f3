"""The typer app, its command groups and the options every command shares (`--workspace`, `--db`).

Command modules (`project`, `loop`, `data`) import `app` from here and register on it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(no_args_is_help=True, add_completion=False, help="rlhf-loop: an online human-feedback loop.")
prompts_app = typer.Typer(no_args_is_help=True, help="Manage prompts.")
user_app = typer.Typer(no_args_is_help=True, help="Manage annotator and operator accounts.")
app.add_typer(prompts_app, name="prompts")
app.add_typer(user_app, name="user")

WorkspaceOpt = Annotated[
    Path | None,
    typer.Option("--workspace", "-w", help="Workspace directory (default: $RLHF_WORKSPACE or .)", show_default=False),
]
DbOpt = Annotated[str | None, typer.Option("--db", help="Database URL (sqlite:///FILE or postgresql://...)")]


def open_ws(workspace: Path | None, db: str | None):  # noqa: ANN201 - avoids importing at CLI start
    from rlhf_core.workspace import open_workspace

    return open_workspace(workspace, db)


def open_db(workspace: Path | None, db: str | None):  # noqa: ANN201
    ws = open_ws(workspace, db)
    database = ws.database()
    database.upgrade()
    return ws, database


def cli_actor() -> str:
    """Who an audit row names for a shell command: `cli:<login name>`."""
    import getpass

    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"
