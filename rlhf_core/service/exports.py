"""Exporting datasets: every export kind of `rlhf_core.registry.EXPORT_KINDS`, from `rlhf export` and from the
operator page alike. Options that do not apply to a kind are refused with one line; a done export is audited."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rlhf_core.data.export import ExportError
from rlhf_core.data.records import ExportOutcome
from rlhf_core.registry import EXPORT_FORMATS, EXPORT_KINDS, resolve, spoken_list
from rlhf_core.service.actor import ActionRefused, Actor, audit
from rlhf_core.workspace import Workspace
from storage import Database


def given_options(options: dict[str, Any]) -> dict[str, Any]:
    """The options a caller set: neither None nor False (a flag left off)."""
    return {k: v for k, v in options.items() if v is not None and v is not False}


def option_refusal(kind: str, options: dict[str, Any]) -> str | None:
    """Why `options` do not fit export kind `kind` (one it does not take), or None."""
    spec = EXPORT_KINDS.require(kind)
    foreign = [k for k in given_options(options) if k not in spec.options]
    if not foreign:
        return None
    flags = spoken_list(["--" + k.replace("_", "-") for k in foreign], "and")
    return (f"{flags} {'does' if len(foreign) == 1 else 'do'} not apply to --what {kind}; it takes "
            f"{spoken_list(['--' + k.replace('_', '-') for k in spec.options], 'and')}")


def export_dataset(ws: Workspace, db: Database, kind: str, out: Path, actor: Actor, *, fmt: str = "hf",
                   **options: Any) -> ExportOutcome:
    """Write the `kind` dataset ("preferences", "demos") to the directory `out` as `fmt`. `options` left None
    are not given; one the kind does not take is refused (ActionRefused), as is a writer's ExportError."""
    spec = EXPORT_KINDS.require(kind)
    if fmt not in EXPORT_FORMATS:
        raise ActionRefused(f"format must be one of {', '.join(EXPORT_FORMATS)}, not {fmt!r}")
    if (refused := option_refusal(kind, options)) is not None:
        raise ActionRefused(refused)
    given = given_options(options)
    try:
        outcome: ExportOutcome = resolve(spec.writer)(db, Path(out), config=ws.config, fmt=fmt, options=given)
    except ExportError as exc:
        raise ActionRefused(str(exc)) from None
    audit(db, actor, "export", what=kind, format=fmt, rows=outcome.rows,
          **{k: v for k, v in given.items() if k != "overwrite"})
    return outcome
