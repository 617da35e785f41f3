"""The `rlhf` console script: registers every command group and turns user errors into one line."""

from __future__ import annotations

import sys

import typer

from rlhf_core.cli.app import app


def load_commands() -> typer.Typer:
    """Import every command module, which registers its commands on `app` in the order `rlhf --help` lists them,
    and return `app`. Call after `load_plugins`, so the commands' choices and help include the plugins' kinds."""
    # isort: off
    from rlhf_core.cli import (  # noqa: F401
        project, imports, users, jobs, judges, serve, exports, simulation, models, quickstart, rewards, steps, ops,
    )
    # isort: on
    return app


def main() -> None:
    import click

    from rlhf_core.registry import PluginError, load_plugins

    try:
        load_plugins()
    except PluginError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(1)
    load_commands()
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
