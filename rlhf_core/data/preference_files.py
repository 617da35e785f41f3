"""Existing preference datasets for `rlhf preferences import`: each record becomes a prior judgment
("under this prompt, `chosen` was preferred to `rejected`"), stored with its source and weight, never served.

The formats are registered in `rlhf_core.registry.PREFERENCE_FORMATS` (one entry there, one parser here
each); `--format auto` (the default) picks, per record, the first whose fields it has:
- "conversational" (TRL's conversational form): `chosen` and `rejected` are lists of chat messages. With a
  `prompt` (a message list) each is one assistant message; without one (TRL's implicit prompt) they are
  whole conversations whose shared beginning is the prompt and which differ in one last assistant message;
- "standard" (TRL's standard form): `prompt`, `chosen`, `rejected` strings;
- "hh" (Anthropic HH-RLHF): `chosen` and `rejected` strings holding whole transcripts
  ("\\n\\nHuman: ... \\n\\nAssistant: ..."); the conversation before the last "Assistant:" turn, which both
  must share, is the prompt.
JSONL, CSV (message lists as JSON cells) or a `datasets.save_to_disk` directory, read all-or-nothing like
every import file (the one reader `data.records`): the first bad record refuses the whole file with one
line naming the file, the line and what to fix.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from rlhf_core.config import Config
from rlhf_core.data.file_checks import InputFileError, check_text, required_text
from rlhf_core.data.pair_files import MAX_RESPONSE_CHARS, conversation, import_name
from rlhf_core.data.prompt_files import DEFAULT_MAX_PROMPT_CHARS, ROLES
from rlhf_core.data.records import ImportOutcome, parse_file
from rlhf_core.registry import IMPORT_KINDS, PREFERENCE_FORMATS, resolve
from storage import Database, PriorSpec, add_prior_preferences, prior_counts


def _distinct(spec: PriorSpec, where: str) -> PriorSpec:
    if spec.chosen == spec.rejected:
        raise InputFileError(f"{where}: chosen and rejected are the same text; a preference needs two different "
                             "responses")
    return spec


# ----------------------------------------------------------------------------- TRL standard


def parse_standard(record: dict[str, Any], where: str, max_prompt_chars: int) -> PriorSpec:
    messages = conversation({"prompt": required_text(record, "prompt", where, max_prompt_chars)}, where,
                            max_prompt_chars)
    chosen, rejected = (required_text(record, f, where, MAX_RESPONSE_CHARS) for f in ("chosen", "rejected"))
    return _distinct(PriorSpec(messages, chosen, rejected), where)


# ----------------------------------------------------------------------------- TRL conversational


def _messages(value: Any, where: str, field: str) -> list[dict[str, str]]:
    if not isinstance(value, list) or not value:
        raise InputFileError(f"{where}: '{field}' must be a non-empty list of {{role, content}} messages")
    out = []
    for i, m in enumerate(value):
        if not isinstance(m, dict) or m.get("role") not in ROLES or not isinstance(m.get("content"), str):
            raise InputFileError(f"{where}: {field}[{i}] must be {{\"role\": one of {'/'.join(ROLES)}, "
                                 "\"content\": text}")
        out.append({"role": m["role"], "content": check_text(m["content"], where, field=f"{field}[{i}].content")})
    return out


def _answer(completion: list[dict[str, str]], where: str, field: str) -> str:
    if len(completion) != 1 or completion[0]["role"] != "assistant":
        raise InputFileError(f"{where}: '{field}' must end in exactly one assistant message after the prompt "
                             f"(found {len(completion)} message(s) after it)")
    text = completion[0]["content"]
    if not text.strip():
        raise InputFileError(f"{where}: the answer in '{field}' is empty")
    return check_text(text, where, field=field, max_chars=MAX_RESPONSE_CHARS)


def parse_conversational(record: dict[str, Any], where: str, max_prompt_chars: int) -> PriorSpec:
    chosen, rejected = (_messages(record.get(f), where, f) for f in ("chosen", "rejected"))
    if record.get("prompt") is not None:
        prompt = _messages(record["prompt"], where, "prompt")
    else:  # TRL's implicit prompt: the conversations' shared beginning
        shared = 0
        while shared < min(len(chosen), len(rejected)) - 1 and chosen[shared] == rejected[shared]:
            shared += 1
        prompt, chosen, rejected = chosen[:shared], chosen[shared:], rejected[shared:]
        if not prompt:
            raise InputFileError(f"{where}: with no 'prompt', chosen and rejected must share the conversation "
                                 "before their last assistant message")
    messages = conversation({"messages": prompt}, where, max_prompt_chars)
    return _distinct(PriorSpec(messages, _answer(chosen, where, "chosen"), _answer(rejected, where, "rejected")),
                     where)


# ----------------------------------------------------------------------------- Anthropic HH transcripts

_HH_TURN = re.compile(r"\n\n(Human|Assistant): ?")
_HH_ROLES = {"Human": "user", "Assistant": "assistant"}


def _hh_turns(text: str, where: str, field: str) -> list[tuple[str, str]]:
    if text.startswith(("Human:", "Assistant:")):
        text = "\n\n" + text
    parts = _HH_TURN.split(text)
    if parts[0].strip() or len(parts) < 5:
        raise InputFileError(f"{where}: '{field}' is not an HH transcript (\"\\n\\nHuman: ...\\n\\nAssistant: "
                             "...\"); a record without 'prompt' must hold one, or give prompt/chosen/rejected")
    turns = [(_HH_ROLES[parts[i]], parts[i + 1].strip()) for i in range(1, len(parts), 2)]
    if turns[-1][0] != "assistant" or turns[-2][0] != "user":
        raise InputFileError(f"{where}: '{field}' must end with a Human: turn answered by an Assistant: turn")
    return turns


def parse_hh(record: dict[str, Any], where: str, max_prompt_chars: int) -> PriorSpec:
    chosen, rejected = (_hh_turns(required_text(record, f, where, max_prompt_chars + MAX_RESPONSE_CHARS), where, f)
                        for f in ("chosen", "rejected"))
    if chosen[:-1] != rejected[:-1]:
        raise InputFileError(f"{where}: chosen and rejected differ before their last Assistant: turn; in an HH "
                             "record they share the conversation and differ only in the last answer")
    messages = conversation({"messages": [{"role": r, "content": c} for r, c in chosen[:-1]]}, where,
                            max_prompt_chars)
    answers = []
    for field, turns in (("chosen", chosen), ("rejected", rejected)):
        answers.append(_answer([{"role": "assistant", "content": turns[-1][1]}], where, field))
    return _distinct(PriorSpec(messages, *answers), where)


def _is_list(record: dict[str, Any], *fields: str) -> bool:
    return any(isinstance(record.get(f), list) for f in fields)


def is_conversational(record: dict[str, Any]) -> bool:
    return _is_list(record, "chosen", "rejected", "prompt")


def is_standard(record: dict[str, Any]) -> bool:
    return "prompt" in record


def is_hh(record: dict[str, Any]) -> bool:
    return "prompt" not in record


def prior_from_record(record: Any, where: str, *, fmt: str = "auto",
                      max_prompt_chars: int = DEFAULT_MAX_PROMPT_CHARS) -> PriorSpec:
    """One prior judgment from a parsed record in format `fmt` (a PREFERENCE_FORMATS key, or "auto")."""
    if not isinstance(record, dict):
        raise InputFileError(f"{where}: expected an object with chosen and rejected (and prompt)")
    for field in ("chosen", "rejected"):
        if record.get(field) is None:
            raise InputFileError(f"{where}: no '{field}' field (found: {', '.join(record) or 'none'})")
    if fmt == "auto":
        fmt = next(name for name, f in PREFERENCE_FORMATS.items() if resolve(f.matches)(record))
    return resolve(PREFERENCE_FORMATS[fmt].parse)(record, where, max_prompt_chars)


def read_preference_file(path: Path | str, *, fmt: str = "auto",
                         max_prompt_chars: int = DEFAULT_MAX_PROMPT_CHARS) -> list[PriorSpec]:
    """Every prior judgment of a JSONL or CSV file or a datasets directory; InputFileError otherwise."""
    path = Path(path).expanduser()
    if fmt != "auto" and fmt not in PREFERENCE_FORMATS:
        raise InputFileError(f"{path}: unknown format {fmt!r}; use auto, {', '.join(PREFERENCE_FORMATS)}")
    is_csv = path.is_file() and path.suffix.lower() == ".csv"
    return parse_file(path, IMPORT_KINDS["preferences"].schema,
                      lambda r, where: prior_from_record(_csv_lists(r) if is_csv else r, where, fmt=fmt,
                                                         max_prompt_chars=max_prompt_chars),
                      what="preferences")


def _csv_lists(record: dict[str, Any]) -> dict[str, Any]:
    """A CSV row with its prompt/chosen/rejected cells that hold a JSON list (conversational form) parsed;
    other cells stay text."""
    out = dict(record)
    for field in ("prompt", "chosen", "rejected"):
        cell = out.get(field)
        if isinstance(cell, str) and cell.lstrip().startswith("[") and cell.rstrip().endswith("]"):
            try:
                out[field] = json.loads(cell)
            except json.JSONDecodeError:
                pass  # text that looks like a list stays text
    if out.get("prompt") == "":  # an empty prompt column: HH transcripts in CSV
        out.pop("prompt")
    return out


def import_preference_file(db: Database, path: Path | str, *, config: Config, imported_by: str,
                           source: str | None, options: dict[str, Any]) -> ImportOutcome:
    """The preferences import kind: read `path` whole (format `options["format"]`, default auto), then store its
    prior judgments in one transaction under `source` (default: the file's name) with `options["weight"]`
    (default 1); nothing is written when any record is bad; repeats are counted, not added."""
    weight = options.get("weight", 1.0)
    if not isinstance(weight, int | float) or not weight >= 0 or weight == float("inf"):
        raise InputFileError(f"{path}: --weight must be a finite number >= 0, not {weight}")
    specs = read_preference_file(path, fmt=options.get("format") or "auto",
                                 max_prompt_chars=config.labeling.max_prompt_chars)
    name = import_name(source, path)
    result = add_prior_preferences(db, specs, source=name, weight=weight)
    total = sum(prior_counts(db).values())
    return ImportOutcome(result.added, result.duplicates,
                         f"Imported {result.added} prior judgments as '{name}' with weight {weight:g} "
                         f"({result.duplicates} duplicates skipped); {total} in all, used by reward-model training "
                         f"at reward.prior_weight = {config.reward.prior_weight:g}.",
                         {"source": name, "weight": weight})
