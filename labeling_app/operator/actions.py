"""The operator page's export: the preference dataset written through the action service into the workspace's
exports folder, then zipped for download from a private staging folder. Free of Gradio and of role checks;
`controls` checks the operator on every event before calling it."""

from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from rlhf_core.data.export import ExportResult
from rlhf_core.service.actor import Actor
from rlhf_core.service.exports import export_dataset
from rlhf_core.workspace import Workspace
from storage import Database, utcnow

STAGED_ZIP_LIFETIME_S = 3600.0


@dataclass
class ExportedZip:
    result: ExportResult
    directory: Path  # the dataset, kept in the workspace's exports folder
    zip_path: Path  # a staged copy for download


class ExportStaging:
    """A private temp folder (made on first use) for zips handed to the browser. Gradio serves only
    files under the temp dir or the working directory, and copies each into its own cache when it
    sends it, so a staged zip is kept for an hour and the workspace itself is never exposed."""

    def __init__(self) -> None:
        self._root: Path | None = None

    @property
    def root(self) -> Path:
        if self._root is None:
            self._root = Path(tempfile.mkdtemp(prefix="rlhf-exports-"))
        return self._root

    def prune(self, now: float | None = None) -> None:
        now = time.time() if now is None else now
        for old in self.root.glob("*.zip"):
            if now - old.stat().st_mtime > STAGED_ZIP_LIFETIME_S:
                old.unlink(missing_ok=True)


def _fresh_export_dir(ws: Workspace, fmt: str) -> Path:
    stamp = utcnow().strftime("%Y%m%dT%H%M%SZ")
    candidate = ws.exports_dir / f"preferences-{stamp}-{fmt}"
    n = 2
    while candidate.exists():
        candidate = ws.exports_dir / f"preferences-{stamp}-{fmt}-{n}"
        n += 1
    return candidate


def export_zip(ws: Workspace, db: Database, staging: ExportStaging, actor: Actor, *, fmt: str,
               min_agreement: float | None, include_ties: bool, anonymize: bool = True) -> ExportedZip:
    """Export into `<workspace>/exports/preferences-<UTC time>-<fmt>/` (the action service's export, audited)
    and zip that folder for download. Raises ActionRefused (nothing qualifies, bad arguments) with a message
    for the operator."""
    out = _fresh_export_dir(ws, fmt)
    outcome = export_dataset(ws, db, "preferences", out, actor, fmt=fmt, min_agreement=min_agreement or None,
                             include_ties=include_ties, anonymize=anonymize)
    staging.prune()
    archive = shutil.make_archive(str(staging.root / out.name), "zip", root_dir=out.parent, base_dir=out.name)
    return ExportedZip(result=outcome.details["result"], directory=out, zip_path=Path(archive))


def export_summary(exported: ExportedZip) -> str:
    r = exported.result
    skipped = ", ".join(f"{n} {reason.replace('_', ' ')}" for reason, n in r.skipped.items() if n) or "none"
    load = "datasets.load_from_disk(<folder>)" if r.format == "hf" else "datasets.load_dataset(<folder>)"
    low = (f" {r.n_low_accuracy_annotators} annotator(s) below the minimum control accuracy are listed in the "
           "`low_accuracy_annotators` column." if r.n_low_accuracy_annotators else "")
    return (f"Exported **{r.n_rows} pairs** (train {r.n_train}, test {r.n_test}) from {r.n_judgments} judgments "
            f"as `{r.format}` into `{exported.directory.name}` in the workspace's exports folder. "
            f"Pairs left out: {skipped}.{low} The zip holds that folder; read it with `{load}`.")
