"""Importing files: every import kind of `rlhf_core.registry.IMPORT_KINDS`, from `rlhf <command> import FILE`
and from the operator page's upload boxes alike. A bad file is refused whole (`ActionRefused`, one line
naming the file, the line and the fix) and nothing is written; a good one is audited once."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rlhf_core.data.file_checks import InputFileError
from rlhf_core.data.records import ImportOutcome
from rlhf_core.registry import IMPORT_KINDS, resolve
from rlhf_core.service.actor import ActionRefused, Actor, audit
from rlhf_core.workspace import Workspace
from storage import Database


def import_file(ws: Workspace, db: Database, kind: str, path: Path | str, actor: Actor, *, source: str | None = None,
                shown_name: str | None = None, **options: Any) -> ImportOutcome:
    """Import `path` as `kind` (e.g. "prompts", "pairs") under `source` (default: the file's name) with the
    kind's `options` (prompts: split; preferences: weight, format). `shown_name` replaces the path in
    messages (an upload's temporary folder is nobody's business)."""
    spec = IMPORT_KINDS.require(kind)
    path = Path(path)
    try:
        outcome: ImportOutcome = resolve(spec.importer)(db, path, config=ws.config, imported_by=actor.name,
                                                        source=source, options=options)
    except InputFileError as exc:
        message = str(exc)
        raise ActionRefused(message.replace(str(path), shown_name) if shown_name else message) from None
    audit(db, actor, spec.audit_action, **{"source": source or path.name, "added": outcome.added,
                                           "duplicates": outcome.duplicates, **outcome.details})
    return outcome
