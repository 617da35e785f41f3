"""`rlhf backup OUT`: a consistent snapshot of a workspace while the loop serves and trains.

The database is copied first, at one instant (SQLite's online backup API; PostgreSQL's `pg_dump` in an exported
snapshot), together with the list of version files that copy's rows point at. Then exactly those files are copied:
a version's files are complete before its row exists and never change after (`training.publish`), so each row in
the copy has its files, and files of versions published after the snapshot stay out. With them go `rlhf.toml` and
the guidelines. Caches, exports, logs and checkpoints are left out: the model cache is rebuilt from the model
name, and a restored workspace starts with no job under way. The archive's format is `ops.archive`.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from rlhf_core.ops.archive import ROOT, OpsError, write_archive
from rlhf_core.workspace import Workspace
from storage import Database, VersionFiles, dump_postgres, snapshot_sqlite

SQLITE_NAME, POSTGRES_NAME = "database/rlhf.sqlite", "database/postgres.dump"


@dataclass(frozen=True)
class BackupResult:
    path: Path
    database: str  # "sqlite" or "postgresql"
    revision: str | None
    policy_versions: int
    reward_versions: int
    bytes: int


def _package_version() -> str:
    try:
        return version("rlhf-loop")
    except PackageNotFoundError:
        return "unknown"


def _copy_version_files(ws: Workspace, files: list[VersionFiles], into: Path) -> None:
    root = ws.root.resolve()
    for item in files:
        path = Path(item.path).resolve()
        name = f"{item.kind} v{item.version}"
        if not path.is_relative_to(root):
            raise OpsError(f"{name}'s files are outside the workspace ({path}); back up from the workspace whose "
                           "worker wrote them")
        if not (path / "adapter.safetensors").is_file():
            raise OpsError(f"{name}'s files are missing ({path}); `rlhf doctor` says how to fix that; no backup "
                           "was written")
        shutil.copytree(path, into / path.relative_to(root))


def take_backup(ws: Workspace, db: Database, out: Path) -> BackupResult:
    """Write the archive `out` (which must not exist) of workspace `ws` and its database `db`."""
    out = out.expanduser().resolve()
    if out.exists():
        raise OpsError(f"{out} exists already: name a new file for the backup")
    if not out.parent.is_dir():
        raise OpsError(f"{out.parent} does not exist: create it, or name a file in an existing folder")
    if out.is_relative_to(ws.root.resolve() / "adapters"):
        raise OpsError("write the backup outside the workspace's adapters folder")
    staging = Path(tempfile.mkdtemp(prefix=".rlhf-backup-", dir=out.parent))
    try:
        folder = staging / ROOT
        (folder / "database").mkdir(parents=True)
        if db.is_sqlite:
            kind, name = "sqlite", SQLITE_NAME
            files = snapshot_sqlite(db, folder / name)
        else:
            kind, name = "postgresql", POSTGRES_NAME
            files = dump_postgres(db, folder / name)
        revision = db.current_revision()
        workspace = folder / "workspace"
        workspace.mkdir()
        shutil.copy2(ws.config_path, workspace / ws.config_path.name)
        if ws.guidelines_path.is_file() and ws.guidelines_path.resolve().is_relative_to(ws.root.resolve()):
            target = workspace / ws.guidelines_path.resolve().relative_to(ws.root.resolve())
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ws.guidelines_path, target)
        _copy_version_files(ws, files, workspace)
        manifest = {
            "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"), "rlhf_loop": _package_version(),
            "workspace": str(ws.root.resolve()), "config": ws.config_path.name,
            "database": {"kind": kind, "file": name, "revision": revision, "url": db.display_url()},
            "versions": {"policy": sorted(f.version for f in files if f.kind == "policy"),
                         "reward": sorted(f.version for f in files if f.kind == "reward")},
        }
        size = write_archive(folder, manifest, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return BackupResult(path=out, database=kind, revision=revision,
                        policy_versions=len(manifest["versions"]["policy"]),
                        reward_versions=len(manifest["versions"]["reward"]), bytes=size)
