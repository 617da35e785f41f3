"""Pair files for `rlhf pairs import` and the operator page's upload: responses of other systems to be judged.

Each record (a JSONL line, a CSV row with a header, or a row of a `datasets.save_to_disk` directory) holds the
prompt (`prompt` text, or `messages` as in prompt files), `response_a`, `response_b`, and optionally
`system_a` / `system_b` (the names of the systems that wrote them, for the leaderboard) and `metadata` (a JSON
object, kept and exported). In CSV, `messages` and `metadata` cells hold JSON. Other fields are ignored.

Reading is all-or-nothing, as for prompt and control files: the first bad record raises `InputFileError` with
one line naming the file, the line and what to fix, before anything is written (`file_checks` checks the
encoding, control characters and CSV structure).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rlhf_core.data.file_checks import InputFileError, check_text, iter_lines, read_csv_rows
from rlhf_core.data.prompt_files import DEFAULT_MAX_PROMPT_CHARS, PromptFileError, parse_conversation
from storage import MAX_SYSTEM_CHARS, Database, ImportCounts, PairSpec, add_imported_pairs

MAX_RESPONSE_CHARS = 20_000
JSONL_SUFFIXES = (".jsonl", ".ndjson", ".json")
# "v0", "v1", ... name the loop's own policy versions on the leaderboard.
_POLICY_NAME = re.compile(r"v\d+")


def records(path: Path, *, csv_required: tuple[str, ...], json_cells: tuple[str, ...] = ()
            ) -> Iterator[tuple[str, Any]]:
    """(where, record) of every record of a JSONL file, a CSV file with a header (cells named in
    `json_cells` are parsed as JSON when not empty) or a `datasets` directory (its "train" split when it is
    a DatasetDict). `where` is "FILE:LINE" (or "DIR: row N"). InputFileError for what cannot be read."""
    if path.is_dir():
        yield from _dataset_records(path)
    elif path.suffix.lower() in JSONL_SUFFIXES:
        for number, line in iter_lines(path):
            where = f"{path}:{number}"
            try:
                yield where, json.loads(line)
            except json.JSONDecodeError as exc:
                raise InputFileError(f"{where}: not valid JSON ({exc.msg}); write one JSON object per line") from None
    elif path.suffix.lower() == ".csv":
        for number, row in read_csv_rows(path, required=csv_required):
            where = f"{path}:{number}"
            record: dict[str, Any] = dict(row)
            for cell in json_cells:
                if not record.get(cell, "").strip():
                    record.pop(cell, None)
                    continue
                try:
                    record[cell] = json.loads(record[cell])
                except json.JSONDecodeError as exc:
                    raise InputFileError(f"{where}: the {cell} cell is not valid JSON ({exc.msg})") from None
            yield where, record
    else:
        raise InputFileError(f"{path}: unknown format {path.suffix or '(no extension)'}; use .jsonl, .csv or a "
                             "datasets directory")


def _dataset_records(path: Path) -> Iterator[tuple[str, Any]]:
    import datasets

    try:
        ds = datasets.load_from_disk(str(path))
    except Exception as exc:  # noqa: BLE001 - datasets raises several types here
        raise InputFileError(f"{path}: not a directory saved by datasets.save_to_disk ({exc})") from None
    if isinstance(ds, datasets.DatasetDict):
        if "train" not in ds:
            raise InputFileError(f"{path}: a DatasetDict needs a 'train' split (found: {', '.join(ds)})")
        ds = ds["train"]
    for i, row in enumerate(ds):
        yield f"{path}: row {i}", dict(row)


def required_text(record: dict[str, Any], field: str, where: str, max_chars: int) -> str:
    """The record's non-empty text `field`, checked (`check_text`); InputFileError naming `where` otherwise."""
    value = record.get(field)
    if value is None:
        raise InputFileError(f"{where}: no '{field}' field (found: {', '.join(record) or 'none'})")
    if not isinstance(value, str):
        raise InputFileError(f"{where}: '{field}' must be text, not {type(value).__name__}")
    if not value.strip():
        raise InputFileError(f"{where}: '{field}' is empty")
    return check_text(value, where, field=field, max_chars=max_chars)


def conversation(record: dict[str, Any], where: str, max_prompt_chars: int) -> list[dict[str, str]]:
    try:
        return parse_conversation(record, where, max_chars=max_prompt_chars)
    except PromptFileError as exc:
        raise InputFileError(str(exc)) from None


def _system(record: dict[str, Any], field: str, where: str) -> str | None:
    value = record.get(field)
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    name = required_text(record, field, where, MAX_SYSTEM_CHARS).strip()
    if _POLICY_NAME.fullmatch(name):
        raise InputFileError(f"{where}: {field} {name!r} is the name of a policy version of this loop; "
                             "name the system otherwise")
    return name


def pair_from_record(record: Any, where: str, *, max_prompt_chars: int = DEFAULT_MAX_PROMPT_CHARS) -> PairSpec:
    """One imported pair from a parsed record; InputFileError naming `where` and the fix otherwise."""
    if not isinstance(record, dict):
        raise InputFileError(f"{where}: expected an object with prompt (or messages), response_a and response_b")
    messages = conversation(record, where, max_prompt_chars)
    response_a, response_b = (required_text(record, f, where, MAX_RESPONSE_CHARS) for f in ("response_a", "response_b"))
    if response_a == response_b:
        raise InputFileError(f"{where}: response_a and response_b are the same text; a pair needs two different "
                             "responses")
    metadata = record.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        raise InputFileError(f"{where}: 'metadata' must be a JSON object, not {type(metadata).__name__}")
    if metadata is not None:
        check_text(json.dumps(metadata, ensure_ascii=False), where, field="metadata", max_chars=MAX_RESPONSE_CHARS)
    return PairSpec(messages=messages, response_a=response_a, response_b=response_b,
                    system_a=_system(record, "system_a", where), system_b=_system(record, "system_b", where),
                    metadata=metadata)


def read_pair_file(path: Path | str, *, max_prompt_chars: int = DEFAULT_MAX_PROMPT_CHARS) -> list[PairSpec]:
    """Every pair of a JSONL or CSV file or a datasets directory; InputFileError (one line: file, line, fix)."""
    path = Path(path).expanduser()
    if not path.exists():
        raise InputFileError(f"{path}: no such file or directory")
    found = records(path, csv_required=("response_a", "response_b"), json_cells=("messages", "metadata"))
    try:
        pairs = [pair_from_record(record, where, max_prompt_chars=max_prompt_chars) for where, record in found]
    except OSError as exc:
        raise InputFileError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    if not pairs:
        raise InputFileError(f"{path}: no pairs found")
    return pairs


def import_pair_file(db: Database, path: Path | str, *, source: str | None = None, judgments_wanted: int,
                     max_prompt_chars: int = DEFAULT_MAX_PROMPT_CHARS) -> ImportCounts:
    """Read `path` whole, then store its pairs in one transaction as kind "imported" under `source` (default:
    the file's name), each wanting `judgments_wanted` judgments (k). Nothing is written when any record is bad;
    pairs already stored are counted as duplicates."""
    pairs = read_pair_file(path, max_prompt_chars=max_prompt_chars)
    name = import_name(source, path)
    return add_imported_pairs(db, pairs, source=name, judgments_wanted=judgments_wanted)


def import_name(source: str | None, path: Path | str) -> str:
    """The source an import is recorded under: `source`, checked, or the file's name."""
    name = Path(path).name if source is None else source.strip()
    if not name:
        raise InputFileError(f"{path}: the import's name (--name) is empty")
    return check_text(name, f"{path}", field="the import's name (--name)", max_chars=255)
