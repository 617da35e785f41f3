"""The one reader of import files, for every import kind (`rlhf_core.registry.IMPORT_KINDS`): JSON Lines,
CSV with a header, or a directory saved by `datasets.save_to_disk`, checked against the kind's
`RecordSchema`; and what an import or export reports (`ImportOutcome`, `ExportOutcome`).

Reading is strict (`file_checks`: UTF-8, no control characters, no ragged CSV) and all-or-nothing: each
kind's parser turns records into specs and the first bad record raises `InputFileError` with one line
naming the file, the line and what to fix, before anything is written.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from rlhf_core.data.file_checks import InputFileError, iter_lines, read_csv_rows
from rlhf_core.registry import CSV_SUFFIXES, JSONL_SUFFIXES, RecordSchema

T = TypeVar("T")


@dataclass
class ImportOutcome:
    """What an import did: rows added, repeats skipped, a sentence for people (naming the file, not its
    path) and the figures its audit row records."""

    added: int
    duplicates: int
    summary: str
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class ExportOutcome:
    """What an export wrote: the folder, the rows, and a sentence for people."""

    path: Path
    rows: int
    summary: str
    details: dict[str, Any] = field(default_factory=dict)


def read_records(path: Path, schema: RecordSchema) -> Iterator[tuple[str, Any]]:
    """(where, record) of every record of `path`; `where` is "FILE:LINE" or "DIR: [SPLIT ]row N". CSV cells
    named in `schema.json_cells` are parsed as JSON when not empty; a CSV file must have the schema's
    required columns and, when records hold a prompt, a `prompt` or `messages` column."""
    if path.is_dir():
        yield from _dataset_records(path, schema)
    elif path.suffix.lower() in JSONL_SUFFIXES:
        for number, line in iter_lines(path):
            where = f"{path}:{number}"
            try:
                yield where, json.loads(line)
            except json.JSONDecodeError as exc:
                raise InputFileError(f"{where}: not valid JSON ({exc.msg}); write one JSON object per line") from None
    elif path.suffix.lower() in CSV_SUFFIXES:
        rows = read_csv_rows(path, required=schema.required)
        if rows and schema.prompt and "prompt" not in rows[0][1] and "messages" not in rows[0][1]:
            raise InputFileError(f"{path}:1: a CSV file needs a 'prompt' column (or 'messages', as JSON); found: "
                                 f"{', '.join(rows[0][1])}")
        for number, row in rows:
            yield f"{path}:{number}", _json_cells(row, schema.json_cells, f"{path}:{number}")
    else:
        raise InputFileError(f"{path}: unknown format {path.suffix or '(no extension)'}; use .jsonl, .csv or a "
                             "datasets directory")


def _json_cells(row: dict[str, str], cells: tuple[str, ...], where: str) -> dict[str, Any]:
    record: dict[str, Any] = dict(row)
    for cell in cells:
        if not record.get(cell, "").strip():
            record.pop(cell, None)
            continue
        try:
            record[cell] = json.loads(record[cell])
        except json.JSONDecodeError as exc:
            raise InputFileError(f"{where}: the {cell} cell is not valid JSON ({exc.msg})") from None
    return record


def _dataset_records(path: Path, schema: RecordSchema) -> Iterator[tuple[str, Any]]:
    import datasets

    try:
        ds = datasets.load_from_disk(str(path))
    except Exception as exc:  # noqa: BLE001 - datasets raises several types here
        raise InputFileError(f"{path}: not a directory saved by datasets.save_to_disk ({exc})") from None
    if isinstance(ds, datasets.DatasetDict):
        if schema.all_splits:
            for split, table in ds.items():
                for i, row in enumerate(table):
                    yield f"{path}: {split} row {i}", dict(row)
            return
        if "train" not in ds:
            raise InputFileError(f"{path}: a DatasetDict needs a 'train' split (found: {', '.join(ds)})")
        ds = ds["train"]
    for i, row in enumerate(ds):
        yield f"{path}: row {i}", dict(row)


def parse_file(path: Path | str, schema: RecordSchema, parse: Callable[[Any, str], T], *, what: str) -> list[T]:
    """Every record of `path` parsed by `parse(record, where)`; InputFileError for a missing or unreadable
    file, the first bad record, or a file without `what` (e.g. "prompts")."""
    path = Path(path).expanduser()
    if not path.exists():
        raise InputFileError(f"{path}: no such file or directory")
    try:
        specs = [parse(record, where) for where, record in read_records(path, schema)]
    except OSError as exc:
        raise InputFileError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    if not specs:
        raise InputFileError(f"{path}: no {what} found")
    return specs
