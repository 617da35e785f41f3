"""Control-pair files (JSONL, CSV or a datasets directory) for `rlhf controls import` and the operator page.

Each record holds the prompt (`prompt` as text, or `messages` as in prompt files; in CSV a
`messages` cell holds that list as JSON), `response_a`, `response_b`, and `expected`: the right
choice, one of a, b, tie, both_bad. Other fields are ignored. Reading is all-or-nothing: the first
bad line raises `InputFileError` with one line naming the file, the line and the fix, before
anything is written; the one reader `data.records` reads the file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rlhf_core.config import Config
from rlhf_core.data.file_checks import InputFileError, required_text
from rlhf_core.data.prompt_files import DEFAULT_MAX_PROMPT_CHARS as MAX_PROMPT_CHARS
from rlhf_core.data.prompt_files import PromptFileError, parse_conversation
from rlhf_core.data.records import ImportOutcome, parse_file
from rlhf_core.registry import IMPORT_KINDS
from storage import CHOICES, ControlSpec, Database, add_control_pairs, count_control_pairs

MAX_RESPONSE_CHARS = 20_000
RESPONSE_FIELDS = ("response_a", "response_b")


def control_from_record(record: Any, where: str, *, max_prompt_chars: int = MAX_PROMPT_CHARS) -> ControlSpec:
    """One control pair from a parsed record (a JSON object or a CSV row); InputFileError naming `where`."""
    if not isinstance(record, dict):
        raise InputFileError(f"{where}: expected an object with prompt (or messages), response_a, response_b "
                             "and expected")
    try:
        messages = parse_conversation(record, where, max_chars=max_prompt_chars)
    except PromptFileError as exc:
        raise InputFileError(str(exc)) from None
    response_a, response_b = (required_text(record, field, where, MAX_RESPONSE_CHARS) for field in RESPONSE_FIELDS)
    if response_a == response_b:
        raise InputFileError(f"{where}: response_a and response_b are the same text; a control pair needs two "
                             "different responses")
    expected = record.get("expected")
    if not isinstance(expected, str) or expected.strip().lower() not in CHOICES:
        raise InputFileError(f"{where}: expected must be one of {', '.join(CHOICES)}, not {expected!r}")
    return ControlSpec(messages=messages, response_a=response_a, response_b=response_b,
                       expected=expected.strip().lower())


def read_control_file(path: Path | str, *, max_prompt_chars: int = MAX_PROMPT_CHARS) -> list[ControlSpec]:
    """Every control pair of a JSONL or CSV file or a datasets directory; InputFileError (one line: file, line,
    fix) otherwise."""
    return parse_file(path, IMPORT_KINDS["controls"].schema,
                      lambda record, where: control_from_record(record, where, max_prompt_chars=max_prompt_chars),
                      what="control pairs")


def import_control_file(db: Database, path: Path | str, *, config: Config, imported_by: str, source: str | None,
                        options: dict[str, Any]) -> ImportOutcome:
    """The controls import kind: read `path` whole, then store its control pairs in one transaction (nothing is
    written when any line is bad). Pairs already stored are counted as duplicates, not added again."""
    controls = read_control_file(path, max_prompt_chars=config.labeling.max_prompt_chars)
    name = source or Path(path).name
    result = add_control_pairs(db, controls, source=name, imported_by=imported_by)
    rate = config.labeling.control_rate
    return ImportOutcome(result.added, result.duplicates,
                         f"Imported {result.added} control pairs from {Path(path).name} ({result.duplicates} already "
                         f"there); {count_control_pairs(db)} in all, served as {rate:.0%} of each annotator's pairs "
                         "(labeling.control_rate).", {"file": Path(path).name})
