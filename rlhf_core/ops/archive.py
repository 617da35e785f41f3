"""The backup archive: a tar (gzip-compressed when its name ends in .gz or .tgz) of one folder, `rlhf-backup/`,
holding `manifest.json`, `database/` (a SQLite file or a `pg_dump` file) and `workspace/` (the configuration, the
guidelines and every version's files). The manifest names the archive's format, the workspace it came from, the
database's kind and schema revision, the versions, and each file's size and SHA-256.

An archive is written to a temporary name beside its final one and renamed when complete. Reading one extracts it
into a scratch folder and checks it before anything else happens: a tar that cannot be read, an entry outside the
folder or not a plain file, a manifest of another format, a file missing, extra or not matching its checksum: each
refuses the archive with one sentence.
"""

from __future__ import annotations

import hashlib
import json
import os
import tarfile
import uuid
import zlib
from pathlib import Path, PurePosixPath
from typing import Any

FORMAT, FORMAT_VERSION = "rlhf-backup", 1
ROOT, MANIFEST = "rlhf-backup", "manifest.json"
CHUNK = 1 << 20


class OpsError(RuntimeError):
    """A backup, restore or check refused, in one sentence that says what to do; nothing was written."""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def file_table(folder: Path) -> dict[str, dict[str, Any]]:
    """Every file under `folder` (but the manifest): its path relative to it, size and SHA-256."""
    return {path.relative_to(folder).as_posix(): {"size": path.stat().st_size, "sha256": sha256_file(path)}
            for path in sorted(folder.rglob("*")) if path.is_file() and path != folder / MANIFEST}


def write_archive(folder: Path, manifest: dict[str, Any], out: Path) -> int:
    """Write `folder` (the archive's contents) with `manifest` plus its file table as `out`, atomically; returns
    the archive's size in bytes."""
    manifest = {**manifest, "format": FORMAT, "format_version": FORMAT_VERSION, "files": file_table(folder)}
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True), encoding="utf-8")
    tmp = out.with_name(f".{out.name}.{uuid.uuid4().hex[:8]}.tmp")
    mode = "w:gz" if out.name.endswith((".gz", ".tgz")) else "w"
    try:
        with tarfile.open(tmp, mode) as tar:
            tar.add(folder / MANIFEST, arcname=f"{ROOT}/{MANIFEST}")  # first, so a reader meets it early
            for path in sorted(folder.rglob("*")):
                if path.is_file() and path != folder / MANIFEST:
                    tar.add(path, arcname=f"{ROOT}/{path.relative_to(folder).as_posix()}")
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return out.stat().st_size


def _member_path(member: tarfile.TarInfo, archive: Path) -> PurePosixPath | None:
    """The entry's path inside `rlhf-backup/` (None for the folder itself); refuses anything else."""
    path = PurePosixPath(member.name)
    if path.is_absolute() or ".." in path.parts or not path.parts or path.parts[0] != ROOT:
        raise OpsError(f"{archive} holds an entry outside {ROOT}/ ({member.name!r}): it is not an rlhf backup")
    if member.isdir():
        return None
    if not member.isfile():
        raise OpsError(f"{archive} holds {member.name!r}, which is not a plain file: it is not an rlhf backup")
    return PurePosixPath(*path.parts[1:])


def read_archive(archive: Path, into: Path) -> dict[str, Any]:
    """Extract `archive` into the empty folder `into` and verify it against its manifest; returns the manifest.
    Raises OpsError (one sentence) for an archive that is unreadable, of another format, or corrupted."""
    if not archive.is_file():
        raise OpsError(f"{archive} does not exist (or is not a file): give the path of a backup `rlhf backup` wrote")
    try:
        with tarfile.open(archive, "r:*") as tar:
            for member in tar:
                relative = _member_path(member, archive)
                if relative is None:
                    continue
                target = into / relative
                target.parent.mkdir(parents=True, exist_ok=True)
                with tar.extractfile(member) as source, open(target, "wb") as out:
                    while chunk := source.read(CHUNK):
                        out.write(chunk)
    except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
        reason = " ".join(str(exc).split())  # one line: tarfile's message lists every method it tried
        raise OpsError(f"{archive} cannot be read as a tar archive ({reason[:120]}): it is damaged or not an rlhf "
                       "backup; use another copy") from None
    return verify(archive, into)


def verify(archive: Path, folder: Path) -> dict[str, Any]:
    """Check the extracted `folder` against its manifest (format, the file list, sizes and checksums)."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise OpsError(f"{archive} has no readable {MANIFEST}: it is damaged or not an rlhf backup") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise OpsError(f"{archive} is not an rlhf backup (its manifest names no {FORMAT!r} format)")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise OpsError(f"{archive} is backup format version {manifest.get('format_version')}; this rlhf-loop reads "
                       f"version {FORMAT_VERSION}: restore it with the rlhf-loop that wrote it")
    expected, found = manifest.get("files") or {}, file_table(folder)
    missing, extra = sorted(set(expected) - set(found)), sorted(set(found) - set(expected))
    if missing or extra:
        which = f"{missing[0]} is missing" if missing else f"{extra[0]} is not in its manifest"
        raise OpsError(f"{archive} is corrupted: {which}; use another copy")
    for name, want in expected.items():
        if found[name] != want:
            raise OpsError(f"{archive} is corrupted: {name} does not match its checksum in the manifest; use another "
                           "copy")
    return manifest
