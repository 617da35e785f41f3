"""`rlhf restore IN --workspace DIR [--db URL]`: a backup into a new or empty directory, ready to serve and train.

Everything is checked before anything is written: the target is new or empty, the archive reads and matches its
manifest's checksums (`ops.archive`), its schema revision is one this rlhf-loop knows, and its database goes where
it can: a SQLite backup into the workspace (no --db), a PostgreSQL backup into the empty database --db names. Then
the workspace's files move into place, the database is loaded (PostgreSQL: `pg_restore` in one transaction; a
failure removes what was written), `rlhf.toml` is pointed at it, the version rows are pointed at the restored
files, and the schema is brought up to date.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from rlhf_core.config import dump_config, load_config
from rlhf_core.ops.archive import ROOT, OpsError, read_archive
from rlhf_core.workspace import Workspace, open_workspace
from storage import (
    Database,
    DatabaseError,
    has_tables,
    relocate_version_files,
    restore_postgres,
    schema_knows,
    status_counts,
)

SQLITE_URL = "sqlite:///rlhf.db"


@dataclass(frozen=True)
class RestoreResult:
    workspace: Workspace
    database: str  # the restored database's URL, password hidden
    counts: dict[str, int]
    versions: dict[str, list[int]]


def _check_target(target: Path) -> None:
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise OpsError(f"{target} is not empty: restore into a new or empty directory")


def _check_database(archive: Path, manifest: dict, db_url: str | None) -> Database | None:
    """The PostgreSQL database to load into (None for a SQLite backup), after every check on it."""
    database = manifest.get("database") or {}
    revision, kind = database.get("revision"), database.get("kind")
    if revision is not None and not schema_knows(revision):
        raise OpsError(f"{archive} holds schema revision {revision!r}, which this rlhf-loop does not know: restore "
                       "it with the rlhf-loop that wrote it, or upgrade rlhf-loop")
    if kind == "sqlite":
        if db_url:
            raise OpsError(f"{archive} holds a SQLite database, which goes into the workspace: restore it without --db")
        return None
    if kind != "postgresql":
        raise OpsError(f"{archive} holds a database of unknown kind {kind!r}: it is not an rlhf backup")
    if not db_url or not db_url.startswith(("postgres://", "postgresql")):
        raise OpsError(f"{archive} holds a PostgreSQL database: give --db postgresql://... naming an empty database "
                       "to restore it into (createdb NAME)")
    target = Database(db_url)
    try:
        target.wait_until_reachable(1)
        if has_tables(target):
            raise OpsError(f"the database {target.display_url()} is not empty: create a new one (createdb NAME) and "
                           "give its URL")
    except (DatabaseError, OpsError):
        target.dispose()
        raise
    return target


def restore_backup(archive: Path, target: Path, db_url: str | None = None) -> RestoreResult:
    """Restore `archive` into the new or empty directory `target` (and, for a PostgreSQL backup, the empty
    database `db_url`). Raises OpsError, having written nothing, when any check fails."""
    archive, target = archive.expanduser().resolve(), target.expanduser().resolve()
    _check_target(target)
    scratch = Path(tempfile.mkdtemp(prefix="rlhf-restore-"))
    postgres = None
    created = not target.exists()
    try:
        manifest = read_archive(archive, scratch / ROOT)
        postgres = _check_database(archive, manifest, db_url)
        # Every check passed: from here on, write.
        files = scratch / ROOT / "workspace"
        target.mkdir(parents=True, exist_ok=True)
        for item in files.iterdir():
            shutil.move(str(item), target / item.name)
        try:
            url = _load_database(scratch / ROOT / manifest["database"]["file"], target, postgres)
            config_path = target / manifest.get("config", "rlhf.toml")
            config = load_config(config_path)
            config.database_url = url
            config_path.write_text(dump_config(config), encoding="utf-8")
            ws = open_workspace(target)
            db = postgres or ws.database()
            relocate_version_files(db, manifest["workspace"], str(target))
            db.upgrade()
            counts = status_counts(db)["counts"]
        except BaseException:
            _remove_written(target, created)
            raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    for folder in (ws.adapters_dir, ws.cache_dir, ws.exports_dir):
        folder.mkdir(parents=True, exist_ok=True)
    shown = db.display_url()
    db.dispose()
    return RestoreResult(workspace=ws, database=shown, counts=counts, versions=manifest.get("versions") or {})


def _load_database(dump: Path, target: Path, postgres: Database | None) -> str:
    """Put the backup's database in place; returns the URL `rlhf.toml` gets."""
    if postgres is None:
        shutil.move(str(dump), target / SQLITE_URL.removeprefix("sqlite:///"))
        return SQLITE_URL
    restore_postgres(postgres, dump)
    return postgres.url.replace("postgresql+psycopg://", "postgresql://", 1)


def _remove_written(target: Path, created: bool) -> None:
    if created:
        shutil.rmtree(target, ignore_errors=True)
        return
    for item in target.iterdir():
        shutil.rmtree(item, ignore_errors=True) if item.is_dir() else item.unlink(missing_ok=True)
