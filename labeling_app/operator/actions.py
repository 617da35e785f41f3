"""Operator actions: start a round (PPO, GRPO or DPO), queue a policy-vs-base evaluation batch, export the
preference dataset as a zip to download, import control pairs. The functions here are free of Gradio
and hold no role checks; `page` checks the operator on every event before calling them."""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from rlhf_core.config import POLICY_ALGORITHMS
from rlhf_core.data.control_files import import_control_file
from rlhf_core.data.export import FORMATS, ExportError, ExportResult, export_preferences
from rlhf_core.data.file_checks import InputFileError
from rlhf_core.workspace import Workspace
from storage import (
    Database,
    Job,
    active_job,
    count_control_pairs,
    count_prompts,
    enqueue_job,
    status_counts,
    utcnow,
)

ALGORITHMS = {algo.upper(): algo for algo in POLICY_ALGORITHMS}  # the round picker reads the one table (config)
MAX_EVAL_PROMPTS = 1000
STAGED_ZIP_LIFETIME_S = 3600.0


class ActionRefused(ValueError):
    """An action that cannot run now; the message says why and what to do."""


def _describe(job: Job) -> str:
    return f"job #{job.id} ({job.status}" + (f", {job.progress:.0%})" if job.status == "running" else ")")


def start_round(db: Database, algo: str, requested_by: str) -> Job:
    """Queue a round with `algo` ("ppo", "grpo" or "dpo"). Refused while another round is queued or running."""
    if algo not in ALGORITHMS.values():
        raise ActionRefused(f"algorithm must be one of {', '.join(ALGORITHMS)}, not {algo!r}")
    if status_counts(db)["counts"]["judgments"] == 0:
        raise ActionRefused("No judgments yet: a round trains the reward model on judged pairs, so collect some first.")
    running = active_job(db, "round")
    if running is not None:
        raise ActionRefused(f"A round is already under way: {_describe(running)}. Wait until it is done or failed.")
    params = {"algo": algo, "trigger": "operator", "requested_by": requested_by}
    job = enqueue_job(db, "round", params)
    if json.loads(job.params_json) != params:  # another operator queued one between our check and now
        raise ActionRefused(f"A round was just queued by someone else: {_describe(job)}.")
    return job


def create_eval_batch(db: Database, prompts: int) -> Job:
    """Queue an `eval_batch` job pairing the current policy against the base on `prompts` eval prompts."""
    if not 1 <= prompts <= MAX_EVAL_PROMPTS:
        raise ActionRefused(f"Ask for between 1 and {MAX_EVAL_PROMPTS} eval prompts.")
    if status_counts(db)["versions"]["policy"] == 0:
        raise ActionRefused("The current policy is the base model: run a round first, then compare it with the base.")
    if count_prompts(db, split="eval") == 0:
        raise ActionRefused("There are no eval prompts: import some with `rlhf prompts import FILE --split eval`.")
    pending = active_job(db, "eval_batch")
    if pending is not None:
        raise ActionRefused(f"An evaluation batch is already under way: {_describe(pending)}.")
    return enqueue_job(db, "eval_batch", {"prompts": prompts})


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


def export_dataset(ws: Workspace, db: Database, staging: ExportStaging, *, fmt: str, min_agreement: float | None,
                   include_ties: bool, anonymize: bool = True) -> ExportedZip:
    """Export into `<workspace>/exports/preferences-<UTC time>-<fmt>/` and zip that folder for download.
    Raises ExportError (nothing qualifies, bad arguments) with a message for the operator."""
    if fmt not in FORMATS:
        raise ExportError(f"format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    out = _fresh_export_dir(ws, fmt)
    result = export_preferences(db, out, fmt=fmt, min_agreement=min_agreement or None, include_ties=include_ties,
                                anonymize=anonymize, min_annotator_accuracy=ws.config.reward.min_annotator_accuracy)
    staging.prune()
    archive = shutil.make_archive(str(staging.root / out.name), "zip", root_dir=out.parent, base_dir=out.name)
    return ExportedZip(result=result, directory=out, zip_path=Path(archive))


def export_summary(exported: ExportedZip) -> str:
    r = exported.result
    skipped = ", ".join(f"{n} {reason.replace('_', ' ')}" for reason, n in r.skipped.items() if n) or "none"
    load = "datasets.load_from_disk(<folder>)" if r.format == "hf" else "datasets.load_dataset(<folder>)"
    low = (f" {r.n_low_accuracy_annotators} annotator(s) below the minimum control accuracy are listed in the "
           "`low_accuracy_annotators` column." if r.n_low_accuracy_annotators else "")
    return (f"Exported **{r.n_rows} pairs** (train {r.n_train}, test {r.n_test}) from {r.n_judgments} judgments "
            f"as `{r.format}` into `{exported.directory.name}` in the workspace's exports folder. "
            f"Pairs left out: {skipped}.{low} The zip holds that folder; read it with `{load}`.")


def import_controls(ws: Workspace, db: Database, path: Path, imported_by: str) -> str:
    """Import a control-pair file (JSONL or CSV) and say what happened, in a sentence of plain text.

    A bad file raises ActionRefused with the reader's one-line message (file name, line, fix), and
    nothing is written. The uploaded copy's temporary folder is left out of the message.
    """
    try:
        result = import_control_file(db, path, imported_by=imported_by,
                                     max_prompt_chars=ws.config.labeling.max_prompt_chars)
    except InputFileError as exc:
        raise ActionRefused(str(exc).replace(str(path), path.name)) from None
    return (f"Imported {result.added} control pairs from {path.name} ({result.duplicates} already there); "
            f"{count_control_pairs(db)} in all, served as {ws.config.labeling.control_rate:.0%} of each "
            "annotator's pairs (labeling.control_rate).")
