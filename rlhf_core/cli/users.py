"""`rlhf user add|list|disable|enable|set-password|set-role` and `rlhf audit`: the accounts and the audit log.
Every change goes through the action service (`rlhf_core.service.accounts`, the operator page's rules), ends
the user's open sessions (they log in again under the new state) and writes one audit row."""

from __future__ import annotations

import getpass
import json
import os
import sys
from datetime import datetime, timezone
from typing import Annotated

import typer

from rlhf_core.cli.app import DbOpt, WorkspaceOpt, app, open_db, shell

user_app = typer.Typer(no_args_is_help=True, help="Manage annotator and operator accounts.")
app.add_typer(user_app, name="user")


def read_password(password: str | None) -> str:
    """--password, else $RLHF_PASSWORD, else asked twice on the terminal."""
    if password:
        return password
    if os.environ.get("RLHF_PASSWORD"):
        return os.environ["RLHF_PASSWORD"]
    if not sys.stdin.isatty():
        raise typer.BadParameter("give --password or set RLHF_PASSWORD (no terminal to ask on)")
    first = getpass.getpass("Password: ")
    if first != getpass.getpass("Repeat password: "):
        raise typer.BadParameter("passwords do not match")
    return first


@user_app.command("add")
def user_add(
    name: str,
    workspace: WorkspaceOpt = None,
    db: DbOpt = None,
    role: Annotated[str, typer.Option(help="annotator or operator")] = "annotator",
    password: Annotated[str | None, typer.Option(help="Password (else $RLHF_PASSWORD, else asked)")] = None,
) -> None:
    """Add an account."""
    from rlhf_core.service.accounts import add_user

    ws, database = open_db(workspace, db)
    user, _ = add_user(ws, database, name, role, shell(), password=read_password(password))
    typer.echo(f"Added {user.role} {user.username!r}.")


@user_app.command("list")
def user_list(workspace: WorkspaceOpt = None, db: DbOpt = None) -> None:
    """List accounts."""
    from storage import list_annotators, status_counts

    _, database = open_db(workspace, db)
    counts = status_counts(database)["judgments_per_annotator"]
    typer.echo(f"{'name':<24}{'role':<12}{'active':<8}judgments")
    for u in list_annotators(database):
        typer.echo(f"{u.username:<24}{u.role:<12}{'yes' if u.active else 'no':<8}{counts.get(u.username, 0)}")


@user_app.command("disable")
def user_disable(name: str, workspace: WorkspaceOpt = None, db: DbOpt = None) -> None:
    """Disable an account (its judgments stay): ends its sessions and releases the pairs it holds."""
    from rlhf_core.service.accounts import set_user_active

    _, database = open_db(workspace, db)
    change = set_user_active(database, name, False, shell())
    typer.echo(f"Disabled {name!r} ({change.sessions_ended} open sessions ended).")


@user_app.command("enable")
def user_enable(name: str, workspace: WorkspaceOpt = None, db: DbOpt = None) -> None:
    """Enable a disabled account again."""
    from rlhf_core.service.accounts import set_user_active

    _, database = open_db(workspace, db)
    set_user_active(database, name, True, shell())
    typer.echo(f"Enabled {name!r}.")


@user_app.command("set-password")
def user_set_password(
    name: str,
    workspace: WorkspaceOpt = None,
    db: DbOpt = None,
    password: Annotated[str | None, typer.Option(help="New password (else $RLHF_PASSWORD, else asked)")] = None,
) -> None:
    """Set a new password (also rotates the first operator's printed one); ends the user's sessions."""
    from rlhf_core.service.accounts import change_password

    ws, database = open_db(workspace, db)
    change = change_password(ws, database, name, shell(), password=read_password(password))
    typer.echo(f"New password set for {name!r} ({change.sessions_ended} open sessions ended).")


@user_app.command("set-role")
def user_set_role(name: str, role: str, workspace: WorkspaceOpt = None, db: DbOpt = None) -> None:
    """Change an account's role (annotator or operator); ends the user's sessions."""
    from rlhf_core.service.accounts import change_role

    _, database = open_db(workspace, db)
    change = change_role(database, name, role, shell())
    typer.echo(f"{name!r} is now {role} ({change.sessions_ended} open sessions ended).")


def _since(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(f"{value!r} is not a date/time like 2026-11-26 or 2026-11-26T21:30",
                                 param_hint="--since") from None
    return when if when.tzinfo else when.replace(tzinfo=timezone.utc)


@app.command()
def audit(
    workspace: WorkspaceOpt = None,
    db: DbOpt = None,
    since: Annotated[str | None, typer.Option(help="Only events at or after this UTC time (ISO 8601)")] = None,
    user: Annotated[str | None, typer.Option(help="Only events by this actor (a username, or cli:NAME)")] = None,
    action: Annotated[str | None, typer.Option(help="Only this action (login_failed, export, ...)")] = None,
    limit: Annotated[int, typer.Option(help="At most this many events, newest first")] = 200,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line")] = False,
) -> None:
    """List the audit log: who did what, when, from where, with which parameters (newest first)."""
    from storage import audit_events

    _, database = open_db(workspace, db)
    rows = audit_events(database, since=_since(since), actor=user, action=action, limit=limit)
    for r in rows:
        when = r.created_at if r.created_at.tzinfo else r.created_at.replace(tzinfo=timezone.utc)
        if as_json:
            typer.echo(json.dumps({"id": r.id, "at": when.isoformat(), "actor": r.actor, "action": r.action,
                                   "address": r.address, "params": r.params}, sort_keys=True))
        else:
            typer.echo(f"{when:%Y-%m-%d %H:%M:%S}  {r.actor:<20} {r.action:<18} {r.address:<15} "
                       f"{json.dumps(r.params, sort_keys=True)}")
