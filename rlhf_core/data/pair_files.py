"""Pair files for `rlhf pairs import` and the operator page's upload: responses of other systems to be judged.

Each record (a JSONL line, a CSV row with a header, or a row of a `datasets.save_to_disk` directory) holds the
prompt (`prompt` text, or `messages` as in prompt files), `response_a`, `response_b`, and optionally
`system_a` / `system_b` (the names of the systems that wrote them, for the leaderboard) and `metadata` (a JSON
object, kept and exported). In CSV, `messages` and `metadata` cells hold JSON. Other fields are ignored.

Reading is all-or-nothing, through the one reader `data.records`: the first bad record raises `InputFileError`
with one line naming the file, the line and what to fix, before anything is written.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from rlhf_core.config import Config
from rlhf_core.data.file_checks import InputFileError, check_text, required_text
from rlhf_core.data.prompt_files import DEFAULT_MAX_PROMPT_CHARS, PromptFileError, parse_conversation
from rlhf_core.data.records import ImportOutcome, parse_file
from rlhf_core.registry import IMPORT_KINDS
from storage import MAX_SYSTEM_CHARS, Database, PairSpec, add_imported_pairs, open_pair_count

MAX_RESPONSE_CHARS = 20_000
# "v0", "v1", ... name the loop's own policy versions on the leaderboard.
_POLICY_NAME = re.compile(r"v\d+")


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
    return parse_file(path, IMPORT_KINDS["pairs"].schema,
                      lambda record, where: pair_from_record(record, where, max_prompt_chars=max_prompt_chars),
                      what="pairs")


def import_pair_file(db: Database, path: Path | str, *, config: Config, imported_by: str, source: str | None,
                     options: dict[str, Any]) -> ImportOutcome:
    """The pairs import kind: read `path` whole, then store its pairs in one transaction as kind "imported" under
    `source` (default: the file's name), each wanting `labeling.judgments_per_pair` judgments (k). Nothing is
    written when any record is bad; pairs already stored are counted as duplicates."""
    pairs = read_pair_file(path, max_prompt_chars=config.labeling.max_prompt_chars)
    name = import_name(source, path)
    k = config.labeling.judgments_per_pair
    result = add_imported_pairs(db, pairs, source=name, judgments_wanted=k)
    return ImportOutcome(result.added, result.duplicates,
                         f"Imported {result.added} pairs as '{name}' ({result.duplicates} duplicates skipped), "
                         f"{k} judgment(s) wanted each; {open_pair_count(db)} pairs open in all.", {"source": name})


def import_name(source: str | None, path: Path | str) -> str:
    """The source an import is recorded under: `source`, checked, or the file's name."""
    name = Path(path).name if source is None else source.strip()
    if not name:
        raise InputFileError(f"{path}: the import's name (--name) is empty")
    return check_text(name, f"{path}", field="the import's name (--name)", max_chars=255)
