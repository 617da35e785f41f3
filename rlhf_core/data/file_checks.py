"""Strict reading of files that people import (prompt files, control-pair files): UTF-8 with the byte
offset of the first bad byte, no control characters, and CSV without unclosed quotes or ragged rows.

Every check raises `InputFileError` with one line naming the file, the line and what is wrong, so a
caller can refuse the whole file before anything is written.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# C0 control characters other than tab, newline and carriage return; plus DEL. PostgreSQL cannot
# store NUL in text, and the others are invisible on the labeling page.
_ALLOWED_CONTROL = {"\t", "\n", "\r"}
CONTROL_CHARS = {chr(c) for c in range(32) if chr(c) not in _ALLOWED_CONTROL} | {"\x7f"}


class InputFileError(ValueError):
    """A file (or a field of it) that cannot be imported; the message says where and why."""


def read_text_strict(path: Path) -> str:
    """The file decoded as UTF-8 (a leading BOM is dropped); a bad byte names its offset and line."""
    data = Path(path).read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise InputFileError(f"{path}:{line}: not UTF-8 text (byte 0x{data[exc.start]:02x} at byte offset "
                             f"{exc.start}); save the file as UTF-8") from None
    return text.removeprefix("\ufeff")


def check_text(value: str, where: str, *, field: str = "text", max_chars: int | None = None) -> str:
    """`value` unchanged, or InputFileError if it holds a control character or an unpaired surrogate
    (neither can be stored or shown as text) or exceeds `max_chars`."""
    bad = next((ch for ch in value if ch in CONTROL_CHARS), None)
    if bad is not None:
        raise InputFileError(f"{where}: {field} contains the control character U+{ord(bad):04X}; remove it")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:  # a lone surrogate, e.g. from a JSON "\ud800" escape
        raise InputFileError(f"{where}: {field} contains the unpaired surrogate U+{ord(value[exc.start]):04X}, "
                             "which is not text; remove it") from None
    if max_chars is not None and len(value) > max_chars:
        raise InputFileError(f"{where}: {field} is {len(value)} characters long, over the limit of {max_chars}")
    return value


def iter_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, line without its newline) of a strictly decoded text file, blank lines skipped."""
    for number, line in enumerate(read_text_strict(path).splitlines(), start=1):
        if line.strip():
            yield number, line


def read_csv_rows(path: Path, required: tuple[str, ...]) -> list[tuple[int, dict[str, str]]]:
    """(line number where the row starts, row) for each data row of a CSV file with a header.

    Refused: a missing required column, a row with more or fewer fields than the header, and a quote
    left open (which would otherwise swallow every following line into one field). Quoted fields
    may span lines, as RFC 4180 allows; the line number is where the row starts.
    """
    reader = csv.reader(io.StringIO(read_text_strict(path), newline=""), strict=True)
    rows: list[tuple[int, dict[str, str]]] = []
    try:
        header = next(reader, None)
        if not header:
            raise InputFileError(f"{path}:1: empty CSV file; the first line must name the columns")
        header = [name.strip() for name in header]
        missing = [name for name in required if name not in header]
        if missing:
            raise InputFileError(f"{path}:1: a CSV file needs the column(s) {', '.join(missing)} "
                                 f"(found: {', '.join(header)})")
        start = reader.line_num + 1
        for row in reader:
            if not row or row == [""]:
                start = reader.line_num + 1
                continue
            if len(row) != len(header):
                raise InputFileError(f"{path}:{start}: {len(row)} fields where the header has {len(header)}; "
                                     "quote fields that contain commas")
            rows.append((start, dict(zip(header, row))))
            start = reader.line_num + 1
    except csv.Error as exc:
        raise InputFileError(f"{path}:{start}: malformed CSV ({exc}); is a quote left open?") from None
    return rows


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
