"""Operations on a whole workspace, so a run that lasts days survives its faults: `backup` (a consistent snapshot of
the database, the version files its rows point at and the configuration, while the loop serves and trains),
`restore` (into a new or empty directory, only from an archive whose every file matches its checksum), `archive`
(the archive's format: a tar with a manifest of SHA-256 checksums, written atomically, read and verified before
anything is written), and `doctor` (does every version row have its files and every version's files a row, is the
schema current, is there disk space: each problem with what to do). The SQL is `storage.backup`'s. Each refusal is
an `OpsError`: one sentence, nothing written.
"""

from rlhf_core.ops.archive import OpsError

__all__ = ["OpsError"]
