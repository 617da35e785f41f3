"""`rlhf backup OUT`, `rlhf restore IN --workspace DIR` and `rlhf doctor`: a workspace's database, version files and
configuration saved and restored consistently, and checked (the work is `rlhf_core.ops`'s)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from rlhf_core.cli.app import DbOpt, WorkspaceOpt, app, open_db, open_ws


@app.command()
def backup(
    out: Annotated[Path, typer.Argument(help="The archive to write (a new file; .tar, or .tar.gz to compress)")],
    workspace: WorkspaceOpt = None,
    db: DbOpt = None,
) -> None:
    """Back up the workspace while it serves and trains: the database (SQLite's backup API or pg_dump), the version
    files its rows point at and rlhf.toml, with a manifest of SHA-256 checksums."""
    from rlhf_core.ops.backup import take_backup

    ws, database = open_db(workspace, db)
    done = take_backup(ws, database, out)
    typer.echo(f"Backed up {ws.root} to {done.path} ({done.bytes / 1024 / 1024:.1f} MiB): the {done.database} "
               f"database at schema {done.revision}, {done.policy_versions} policy and {done.reward_versions} "
               "reward-model versions with their files, rlhf.toml. Restore it with "
               f"`rlhf restore {done.path} --workspace NEW_DIR`.")


@app.command()
def restore(
    archive: Annotated[Path, typer.Argument(metavar="IN", help="A backup written by `rlhf backup`")],
    workspace: Annotated[Path, typer.Option("--workspace", "-w", help="The new or empty directory to restore into")],
    db: Annotated[str | None, typer.Option(
        "--db", help="For a PostgreSQL backup: the URL of an empty database to restore it into")] = None,
) -> None:
    """Restore a backup into a new or empty directory (a corrupted or mismatched archive is refused, nothing
    written); the workspace then serves and trains as the one backed up."""
    from rlhf_core.ops.restore import restore_backup

    done = restore_backup(archive, workspace, db)
    counts = done.counts
    typer.echo(f"Restored {archive} into {done.workspace.root} (database {done.database}): {counts['judgments']} "
               f"judgments, {counts['pairs']} pairs, {len(done.versions.get('policy', []))} policy and "
               f"{len(done.versions.get('reward', []))} reward-model versions. Check it with "
               f"`rlhf doctor --workspace {done.workspace.root}`.")


@app.command()
def doctor(
    workspace: WorkspaceOpt = None,
    db: DbOpt = None,
    fix: Annotated[bool, typer.Option(help="Remove what a dead publish left behind (nothing else changes)")] = False,
) -> None:
    """Check the workspace: the database answers at the current schema, every version row has its files and every
    version's files a row, there is disk space. Says what to fix; exits 1 when something is wrong."""
    from rlhf_core.ops.doctor import check_workspace

    ws = open_ws(workspace, db)
    database = ws.database()
    findings = check_workspace(ws, database, fix=fix)
    for finding in findings:
        typer.echo(f"{'ok  ' if finding.ok else 'FAIL'}  {finding.what}" + (f"; fix: {finding.fix}" if finding.fix
                                                                           else ""))
    problems = sum(not f.ok for f in findings)
    database.dispose()
    if problems:
        typer.echo(f"{problems} problem{'s' if problems > 1 else ''} found.", err=True)
        raise typer.Exit(1)
    typer.echo("The workspace is whole.")
