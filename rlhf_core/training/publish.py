"""Publishing a version atomically: its files first, then its database row.

The files are written into a temporary directory beside the version's own (`.tmp-<name>-<random>`), flushed to
disk, and renamed into place in one step; only then is the row added. So a row always points at complete files,
and a crash leaves at worst files without a row: a temporary directory (killed while writing) or a complete
directory (killed between the rename and the row), which `rlhf doctor` names and the next publish of that
number removes or replaces. An error while writing (a full disk) removes the temporary directory and fails with one
sentence; an error while adding the row removes the renamed directory.
"""

from __future__ import annotations

import errno
import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")
TMP_PREFIX = ".tmp-"


class VersionWriteError(RuntimeError):
    """A version's files could not be written (a full disk, a read-only filesystem); nothing was published."""


def disk_full(exc: BaseException) -> bool:
    """Whether `exc` says the filesystem is full (an OSError, or a writer's own error quoting one: safetensors and
    torch.save raise their own types)."""
    return getattr(exc, "errno", None) in (errno.ENOSPC, errno.EDQUOT) or "No space left on device" in str(exc)


def _fsync_tree(directory: Path) -> None:
    for path in sorted(directory.rglob("*")):
        if path.is_file():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())
    _fsync_dir(directory)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def publish_files(final: Path, write: Callable[[Path], object], what: str) -> Path:
    """Write `what` (e.g. "policy v3") with `write(directory)` into a temporary directory beside `final`, flush it
    and rename it to `final`, replacing files a crashed publish left there (they have no row). Raises
    VersionWriteError, leaving nothing behind, when the files cannot be written."""
    final.parent.mkdir(parents=True, exist_ok=True)
    for stale in final.parent.glob(f"{TMP_PREFIX}{final.name}-*"):  # a publish of this number that died writing
        shutil.rmtree(stale, ignore_errors=True)
    tmp = final.parent / f"{TMP_PREFIX}{final.name}-{uuid.uuid4().hex[:8]}"
    try:
        tmp.mkdir()
        write(tmp)
        _fsync_tree(tmp)
        if final.exists():  # left by a publish that died before its row: no row points at it
            shutil.rmtree(final)
        os.replace(tmp, final)
        _fsync_dir(final.parent)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if not isinstance(exc, OSError) and not disk_full(exc):  # not a filesystem's refusal: the caller's error
            raise
        why = "the disk is full" if disk_full(exc) else (exc.strerror or str(exc))
        raise VersionWriteError(f"{what} was not published: writing its files to {final.parent} failed ({why}); "
                                "free space there and run the job again") from exc
    return final


def publish_version(final: Path, write: Callable[[Path], object], record: Callable[[], T], what: str) -> T:
    """`publish_files`, then `record()` (adds the version's row, returns it). If the row cannot be added, the
    files go too: no version is half there."""
    publish_files(final, write, what)
    try:
        return record()
    except BaseException:
        shutil.rmtree(final, ignore_errors=True)
        raise
