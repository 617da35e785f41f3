"""`rlhf doctor`: is this workspace whole? Each check says what it found and, for a problem, what to do.

- the database answers, and its schema is the one this rlhf-loop expects;
- every version row has its files, and every version's files have a row (files without one are left by a
  publish that died before its row; a `.tmp-` folder by one that died while writing, see `training.publish`);
- the workspace's filesystem has `recovery.min_free_disk_mb` free.

`fix=True` removes what a dead publish left behind (a folder untouched for `LEFTOVER_AGE_S`, so a version being
written now is never touched): nothing else is changed.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from rlhf_core.training.publish import TMP_PREFIX
from rlhf_core.workspace import Workspace
from storage import Database, DatabaseError, connection_error_reason, schema_knows, version_files

LEFTOVER_AGE_S = 600.0
VERSION_DIR_PREFIXES = ("policy-v", "reward-v")
MIB = 1024 * 1024


@dataclass(frozen=True)
class Finding:
    """One check's outcome: `ok`, what was found, and for a problem what to do (`fix`)."""

    ok: bool
    what: str
    fix: str = ""


def check_database(db: Database) -> list[Finding]:
    try:
        db.wait_until_reachable(1)
        current, head = db.current_revision(), db.head_revision()
    except Exception as exc:  # noqa: BLE001 - any driver error: the database does not answer
        reason = str(exc) if isinstance(exc, DatabaseError) else connection_error_reason(exc)
        return [Finding(False, f"database {db.display_url()} does not answer: {reason}",
                        "start it, or fix database_url in rlhf.toml (or --db)")]
    found = [Finding(True, f"database {db.display_url()} answers")]
    if current == head:
        found.append(Finding(True, f"schema is current ({head})"))
    elif current is not None and not schema_knows(current):
        found.append(Finding(False, f"schema is at {current!r}, which this rlhf-loop does not know",
                             "upgrade rlhf-loop to the version that wrote it"))
    else:
        found.append(Finding(False, f"schema is at {current!r}, this rlhf-loop expects {head!r}",
                             "run any command that opens the database (e.g. `rlhf status`): it upgrades the schema"))
    return found


def check_versions(ws: Workspace, db: Database, *, fix: bool = False, now: float | None = None) -> list[Finding]:
    """Rows without files, and files without rows (removed with `fix` when old enough)."""
    now = time.time() if now is None else now
    found, referenced = [], set()
    rows = version_files(db)
    for item in rows:
        path = Path(item.path).resolve()
        referenced.add(path)
        if not (path / "adapter.safetensors").is_file() or not (path / "adapter.json").is_file():
            found.append(Finding(False, f"{item.kind} v{item.version}: its files are missing ({path})",
                                 "restore the workspace from a backup (`rlhf restore`); if it is the current policy, "
                                 "`rlhf rollback --to N` makes a version with files current meanwhile"))
    adapters = ws.adapters_dir
    leftovers = sorted(p for p in adapters.iterdir() if p.is_dir()) if adapters.is_dir() else []
    for path in leftovers:
        temporary = path.name.startswith(TMP_PREFIX)
        if not temporary and (not path.name.startswith(VERSION_DIR_PREFIXES) or path.resolve() in referenced):
            continue
        age = now - path.stat().st_mtime
        if age < LEFTOVER_AGE_S:
            found.append(Finding(True, f"{path.name}: a version is being written now ({age:.0f} s ago)"))
            continue
        why = ("left by a publish that died while writing" if temporary else
               "has no version row: left by a publish that died before its row (the next version of that number "
               "replaces it)")
        if fix:
            shutil.rmtree(path)
            found.append(Finding(True, f"removed {path.relative_to(ws.root)}: it {why}"))
        else:
            found.append(Finding(False, f"{path.relative_to(ws.root)} {why}", "`rlhf doctor --fix` removes it"))
    if not found:
        policies = sum(item.kind == "policy" for item in rows)
        found.append(Finding(True, f"{policies} policy and {len(rows) - policies} reward-model versions: each row "
                                   "has its files, each version's files a row"))
    return found


def check_disk(ws: Workspace) -> Finding:
    free, need = shutil.disk_usage(ws.root).free // MIB, ws.config.recovery.min_free_disk_mb
    if free >= need:
        return Finding(True, f"{free} MiB free on the workspace's filesystem")
    return Finding(False, f"only {free} MiB free on the workspace's filesystem (recovery.min_free_disk_mb = {need})",
                   f"free space on the filesystem of {ws.root}: training writes versions and checkpoints there")


def check_workspace(ws: Workspace, db: Database, *, fix: bool = False) -> list[Finding]:
    """Every check, in the order `rlhf doctor` prints them."""
    found = check_database(db)
    if found[0].ok:
        found += check_versions(ws, db, fix=fix)
    return [*found, check_disk(ws)]
