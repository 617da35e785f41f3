"""Control-pair files (JSONL or CSV) for `rlhf controls import` and the operator page's import box.

Each record holds the prompt (`prompt` as text, or `messages` as in prompt files; in CSV a
`messages` cell holds that list as JSON), `response_a`, `response_b`, and `expected`: the right
choice, one of a, b, tie, both_bad. Other fields are ignored. Reading is all-or-nothing: the first
bad line raises `InputFileError` with one line naming the file, the line and the fix, before
anything is written; decoding, control characters and CSV structure are checked by `file_checks`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rlhf_core.data.file_checks import InputFileError, check_text, iter_lines, read_csv_rows
from rlhf_core.data.prompt_files import DEFAULT_MAX_PROMPT_CHARS as MAX_PROMPT_CHARS
from rlhf_core.data.prompt_files import PromptFileError, parse_conversation
from storage import CHOICES, ControlImportResult, ControlSpec, Database, add_control_pairs

MAX_RESPONSE_CHARS = 20_000
RESPONSE_FIELDS = ("response_a", "response_b")
FORMATS = (".jsonl", ".ndjson", ".json", ".csv")


def _text_field(record: dict[str, Any], field: str, where: str, max_chars: int) -> str:
    value = record.get(field)
    if value is None:
        raise InputFileError(f"{where}: no '{field}' field (found: {', '.join(record) or 'none'})")
    if not isinstance(value, str):
        raise InputFileError(f"{where}: '{field}' must be text, not {type(value).__name__}")
    if not value.strip():
        raise InputFileError(f"{where}: '{field}' is empty")
    return check_text(value, where, field=field, max_chars=max_chars)


def control_from_record(record: Any, where: str, *, max_prompt_chars: int = MAX_PROMPT_CHARS) -> ControlSpec:
    """One control pair from a parsed record (a JSON object or a CSV row); InputFileError naming `where`."""
    if not isinstance(record, dict):
        raise InputFileError(f"{where}: expected an object with prompt (or messages), response_a, response_b "
                             "and expected")
    try:
        messages = parse_conversation(record, where, max_chars=max_prompt_chars)
    except PromptFileError as exc:
        raise InputFileError(str(exc)) from None
    response_a, response_b = (_text_field(record, field, where, MAX_RESPONSE_CHARS) for field in RESPONSE_FIELDS)
    if response_a == response_b:
        raise InputFileError(f"{where}: response_a and response_b are the same text; a control pair needs two "
                             "different responses")
    expected = record.get("expected")
    if not isinstance(expected, str) or expected.strip().lower() not in CHOICES:
        raise InputFileError(f"{where}: expected must be one of {', '.join(CHOICES)}, not {expected!r}")
    return ControlSpec(messages=messages, response_a=response_a, response_b=response_b,
                       expected=expected.strip().lower())


def _read_jsonl(path: Path, max_prompt_chars: int) -> list[ControlSpec]:
    controls = []
    for number, line in iter_lines(path):
        where = f"{path}:{number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputFileError(f"{where}: not valid JSON ({exc.msg}); write one JSON object per line") from None
        controls.append(control_from_record(record, where, max_prompt_chars=max_prompt_chars))
    return controls


def _read_csv(path: Path, max_prompt_chars: int) -> list[ControlSpec]:
    rows = read_csv_rows(path, required=(*RESPONSE_FIELDS, "expected"))
    if rows and "prompt" not in rows[0][1] and "messages" not in rows[0][1]:
        raise InputFileError(f"{path}:1: a CSV file needs a 'prompt' column (or 'messages', as JSON)")
    controls = []
    for number, row in rows:
        where = f"{path}:{number}"
        record: dict[str, Any] = dict(row)
        if row.get("messages", "").strip():
            try:
                record["messages"] = json.loads(row["messages"])
            except json.JSONDecodeError as exc:
                raise InputFileError(f"{where}: the messages cell is not valid JSON ({exc.msg})") from None
        else:
            record.pop("messages", None)
        controls.append(control_from_record(record, where, max_prompt_chars=max_prompt_chars))
    return controls


def read_control_file(path: Path | str, *, max_prompt_chars: int = MAX_PROMPT_CHARS) -> list[ControlSpec]:
    """Every control pair of a JSONL or CSV file; InputFileError (one line: file, line, fix) otherwise."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise InputFileError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise InputFileError(f"{path}: unknown format {suffix or '(no extension)'}; use .jsonl or .csv")
    controls = _read_csv(path, max_prompt_chars) if suffix == ".csv" else _read_jsonl(path, max_prompt_chars)
    if not controls:
        raise InputFileError(f"{path}: no control pairs found")
    return controls


def import_control_file(db: Database, path: Path | str, *, imported_by: str,
                        max_prompt_chars: int = MAX_PROMPT_CHARS) -> ControlImportResult:
    """Read `path` whole, then store its control pairs in one transaction (nothing is written when
    any line is bad). Pairs already stored are counted as duplicates, not added again."""
    controls = read_control_file(path, max_prompt_chars=max_prompt_chars)
    return add_control_pairs(db, controls, source=Path(path).name, imported_by=imported_by)
