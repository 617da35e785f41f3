"""The database side of backup, restore and `rlhf doctor`: a consistent copy of the database while the loop writes
to it (SQLite's online backup API; PostgreSQL's `pg_dump` inside an exported snapshot), the version files that
copy's rows point at (read in the same snapshot, so the archive holds exactly their files), loading a copy into a
new place, and moving the rows' file paths to a restored workspace."""

from __future__ import annotations

import glob
import shutil
import sqlite3
import subprocess
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import inspect, text
from sqlalchemy.engine import make_url

from storage.db import Database, DatabaseError

VERSION_FILES_SQL = ("SELECT 'policy', id, adapter_path FROM policyversion WHERE adapter_path IS NOT NULL "
                     "UNION ALL SELECT 'reward', id, adapter_path FROM rewardmodelversion ORDER BY 1, 2")


@dataclass(frozen=True)
class VersionFiles:
    """A version row and the directory of its files: `kind` "policy" or "reward"."""

    kind: str
    version: int
    path: str


def version_files(db: Database) -> list[VersionFiles]:
    """Every policy and reward-model version that has files (version 0, the base model, has none)."""
    with db.transaction() as conn:
        return [VersionFiles(k, int(v), p) for k, v, p in conn.execute(text(VERSION_FILES_SQL))]


def sqlite_file(db: Database) -> Path:
    return Path(make_url(db.url).database).resolve()


def snapshot_sqlite(db: Database, dest: Path) -> list[VersionFiles]:
    """Copy a SQLite database to `dest` with SQLite's online backup API (one step: a consistent snapshot while
    other connections go on writing) and return the version files its rows point at."""
    source = sqlite3.connect(str(sqlite_file(db)), timeout=60)
    target = sqlite3.connect(str(dest))
    try:
        source.backup(target)
        target.execute("PRAGMA journal_mode=DELETE")  # one self-contained file, no -wal beside it
        rows = target.execute(VERSION_FILES_SQL).fetchall()
    finally:
        target.close()
        source.close()
    return [VersionFiles(k, int(v), p) for k, v, p in rows]


def postgres_tool(name: str) -> str:
    """`pg_dump` or `pg_restore`: the newest PostgreSQL's under /usr/lib/postgresql, else the one on PATH."""
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), key=lambda p: int(p.split("/")[4]))
    tool = found[-1] if found else shutil.which(name)
    if tool is None:
        raise DatabaseError(f"{name} not found: install PostgreSQL's client programs (apt-get install "
                            "postgresql-client) to back up or restore a PostgreSQL database")
    return tool


def libpq_url(db_url: str) -> str:
    """A SQLAlchemy URL as libpq (pg_dump, pg_restore) reads it: no "+psycopg" driver name."""
    return make_url(db_url).set(drivername="postgresql").render_as_string(hide_password=False)


def _run(command: list[str], what: str) -> None:
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        reason = (done.stderr.strip().splitlines() or ["no message"])[-1]
        raise DatabaseError(f"{what} failed: {reason}")


def dump_postgres(db: Database, dest: Path) -> list[VersionFiles]:
    """`pg_dump` (custom format) of a PostgreSQL database to `dest`, taken in a snapshot exported from a
    repeatable-read transaction that also reads the version files: the dump and the file list agree exactly,
    whatever commits meanwhile."""
    with db.engine.connect() as conn:
        conn = conn.execution_options(isolation_level="REPEATABLE READ")
        with conn.begin():
            snapshot = conn.execute(text("SELECT pg_export_snapshot()")).scalar_one()
            rows = [VersionFiles(k, int(v), p) for k, v, p in conn.execute(text(VERSION_FILES_SQL))]
            _run([postgres_tool("pg_dump"), "--format=custom", "--no-owner", f"--snapshot={snapshot}",
                  f"--file={dest}", f"--dbname={libpq_url(db.url)}"], f"pg_dump of {db.display_url()}")
    return rows


def has_tables(db: Database) -> bool:
    with db.engine.connect() as conn:
        return bool(inspect(conn).get_table_names())


def restore_postgres(db: Database, dump: Path) -> None:
    """Load a `dump_postgres` file into `db`, an empty database, in one transaction (all of it or nothing)."""
    _run([postgres_tool("pg_restore"), "--no-owner", "--single-transaction", "--exit-on-error",
          f"--dbname={libpq_url(db.url)}", str(dump)], f"pg_restore into {db.display_url()}")


def relocate_version_files(db: Database, old_root: str, new_root: str) -> int:
    """Point version rows whose files were under `old_root` at the same files under `new_root` (a restored
    workspace); returns how many rows moved."""
    old, new = old_root.rstrip("/") + "/", new_root.rstrip("/") + "/"
    moved = 0
    with db.transaction() as conn:
        for table in ("policyversion", "rewardmodelversion"):
            moved += conn.execute(text(
                f"UPDATE {table} SET adapter_path = :new || substr(adapter_path, :n) "  # noqa: S608 - fixed names
                "WHERE substr(adapter_path, 1, :m) = :old"), {"new": new, "old": old, "n": len(old) + 1,
                                                              "m": len(old)}).rowcount
    return moved
