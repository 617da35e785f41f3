"""`rlhf user disable|enable|set-password|set-role` and `rlhf audit`: the account lifecycle and the audit log.
Every change ends the user's open sessions (they log in again under the new state) and writes one
audit row."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated

import typer

from rlhf_core.cli.app import DbOpt, WorkspaceOpt, app, cli_actor, open_db, user_app


def _set_active(name: str, active: bool, workspace: Path | None, db: str | None) -> int:
    """Enable or disable an account and audit it; returns how many of its open sessions ended."""
    from storage import record_audit, set_active

    _, database = open_db(workspace, db)
    ended = set_active(database, name, active)
    record_audit(database, cli_actor(), "user_enable" if active else "user_disable", user=name, sessions_ended=ended)
    return ended


@user_app.command("disable")
def user_disable(name: str, workspace: WorkspaceOpt = None, db: DbOpt = None) -> None:
    """Disable an account (its judgments stay): ends its sessions and releases the pairs it holds."""
    ended = _set_active(name, False, workspace, db)
    typer.echo(f"Disabled {name!r} ({ended} open sessions ended).")


@user_app.command("enable")
def user_enable(name: str, workspace: WorkspaceOpt = None, db: DbOpt = None) -> None:
    """Enable a disabled account again."""
    _set_active(name, True, workspace, db)
    typer.echo(f"Enabled {name!r}.")


@user_app.command("set-password")
def user_set_password(
    name: str,
    workspace: WorkspaceOpt = None,
    db: DbOpt = None,
    password: Annotated[str | None, typer.Option(help="New password (else $RLHF_PASSWORD, else asked)")] = None,
) -> None:
    """Set a new password (also rotates the first operator's printed one); ends the user's sessions."""
    from rlhf_core.cli.project import _read_password
    from storage import record_audit, set_password

    ws, database = open_db(workspace, db)
    ended = set_password(database, name, _read_password(password),
                         min_password_length=ws.config.auth.min_password_length)
    record_audit(database, cli_actor(), "user_set_password", user=name, sessions_ended=ended)
    typer.echo(f"New password set for {name!r} ({ended} open sessions ended).")


@user_app.command("set-role")
def user_set_role(name: str, role: str, workspace: WorkspaceOpt = None, db: DbOpt = None) -> None:
    """Change an account's role (annotator or operator); ends the user's sessions."""
    from storage import record_audit, set_role

    _, database = open_db(workspace, db)
    ended = set_role(database, name, role)
    record_audit(database, cli_actor(), "user_set_role", user=name, role=role, sessions_ended=ended)
    typer.echo(f"{name!r} is now {role} ({ended} open sessions ended).")


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
