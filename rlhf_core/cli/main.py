"""The `rlhf` console script: registers every command group and turns user errors into one line."""

from __future__ import annotations

import sys

import typer

# Importing a command module registers its commands, in the order `rlhf --help` lists them.
# isort: off
from rlhf_core.cli import project  # noqa: F401
from rlhf_core.cli import imports  # noqa: F401
from rlhf_core.cli import users  # noqa: F401
from rlhf_core.cli import jobs  # noqa: F401
from rlhf_core.cli import serve  # noqa: F401
from rlhf_core.cli import exports  # noqa: F401
from rlhf_core.cli import simulation  # noqa: F401
from rlhf_core.cli import models  # noqa: F401
from rlhf_core.cli import quickstart  # noqa: F401
# isort: on
from rlhf_core.cli.app import app


def main() -> None:
    import click

    try:
        # Without standalone mode a command's `typer.Exit(code)` comes back as the return value.
        code = app(standalone_mode=False)
    except typer.Abort:
        typer.echo("Aborted.", err=True)
        sys.exit(1)
    except (click.exceptions.ClickException, typer.TyperException) as exc:  # usage errors carry their own exit code
        exc.show()  # (typer >= 0.2x raises its own copy of click's exceptions, TyperException subclasses)
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except Exception as exc:
        from rlhf_core.cli.errors import user_errors

        if isinstance(exc, user_errors()):
            typer.echo(f"error: {exc}", err=True)
            sys.exit(1)
        raise
    if isinstance(code, int) and code:
        sys.exit(code)
