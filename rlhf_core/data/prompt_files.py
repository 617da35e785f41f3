"""Prompts in: prompt files (JSONL, CSV, or a `datasets.save_to_disk` directory, through the one reader
`data.records`) into chat conversations, and the chat messages of one record (`parse_conversation`, which
every import kind uses for its prompt).

Parsing is all-or-nothing: the first bad record raises `PromptFileError` naming the file, the
line (or row) and the reason, before anything is written to the database. Files are read strictly
(`rlhf_core.data.file_checks`): UTF-8 only (a bad byte is named by its offset), no control
characters, no CSV with an unclosed quote or a ragged row, no prompt over
`labeling.max_prompt_chars` characters (the caller passes that limit in).

A record's other fields (`answer`, `tests`, `solution`, ...) are the prompt's columns: stored with it and passed to
reward functions by name, as TRL passes a dataset's columns (`prompt_columns`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rlhf_core.config import Config, LabelingConfig
from rlhf_core.data.file_checks import InputFileError, check_text
from rlhf_core.data.records import ImportOutcome, parse_file
from rlhf_core.registry import IMPORT_KINDS, TRL_REWARD_ARGUMENTS
from storage import Database, add_prompts

ROLES = ("system", "user", "assistant")
SPLITS = ("train", "eval")
DEFAULT_MAX_PROMPT_CHARS = LabelingConfig().max_prompt_chars


class PromptFileError(InputFileError):
    """A prompt file that cannot be imported; the message says where and why."""


def parse_conversation(record: Any, where: str, *, max_chars: int = DEFAULT_MAX_PROMPT_CHARS) -> list[dict[str, str]]:
    """The chat messages of one record's "prompt" (text) or "messages" ([{role, content}]) field;
    PromptFileError naming `where` otherwise (also for control characters and for a conversation
    longer than `max_chars` characters)."""
    if not isinstance(record, dict):
        raise PromptFileError(f"{where}: expected an object with a 'prompt' or 'messages' field")
    if "messages" in record:
        messages = record["messages"]
        if not isinstance(messages, list) or not messages:
            raise PromptFileError(f"{where}: 'messages' must be a non-empty list of {{role, content}}")
        out = []
        for i, m in enumerate(messages):
            if not isinstance(m, dict) or m.get("role") not in ROLES or not isinstance(m.get("content"), str):
                raise PromptFileError(
                    f"{where}: messages[{i}] must be {{\"role\": one of {'/'.join(ROLES)}, \"content\": text}}"
                )
            out.append({"role": m["role"], "content": _checked(m["content"], where, f"messages[{i}].content")})
        if out[-1]["role"] != "user":
            raise PromptFileError(f"{where}: the last message must be from the user (the model answers it)")
    elif "prompt" in record:
        prompt = record["prompt"]
        if not isinstance(prompt, str):
            raise PromptFileError(f"{where}: 'prompt' must be text")
        out = [{"role": "user", "content": _checked(prompt, where, "prompt")}]
    else:
        raise PromptFileError(f"{where}: no 'prompt' or 'messages' field (found: {', '.join(record) or 'none'})")
    if not out[-1]["content"].strip():
        raise PromptFileError(f"{where}: the prompt is empty")
    total = sum(len(m["content"]) for m in out)
    if total > max_chars:
        raise PromptFileError(f"{where}: the prompt is {total} characters long, over labeling.max_prompt_chars "
                              f"= {max_chars}; shorten it or raise the limit in rlhf.toml")
    return out


def prompt_columns(record: Any, where: str, *, max_chars: int = DEFAULT_MAX_PROMPT_CHARS) -> dict[str, Any]:
    """The fields of a prompt record other than its prompt, by name (empty and null ones left out); PromptFileError
    for a name a reward function is already passed (TRL's `prompts`, `completions`, ...), a value that is not JSON
    or one longer than `max_chars` characters as JSON."""
    if not isinstance(record, dict):
        return {}
    columns = {}
    for name, value in record.items():
        if name in ("prompt", "messages") or value is None or value == "":
            continue
        if name in TRL_REWARD_ARGUMENTS:
            raise PromptFileError(f"{where}: the field {name!r} would clash with the argument of that name every "
                                  "reward function is passed; rename it")
        try:
            text = json.dumps(value, ensure_ascii=False)
        except (TypeError, ValueError):
            raise PromptFileError(f"{where}: the field {name!r} is not a JSON value") from None
        if len(text) > max_chars:
            raise PromptFileError(f"{where}: the field {name!r} is {len(text)} characters long, over "
                                  f"labeling.max_prompt_chars = {max_chars}")
        columns[name] = value
    return columns


def _checked(value: str, where: str, field: str) -> str:
    try:
        return check_text(value, where, field=field)
    except InputFileError as exc:
        raise PromptFileError(str(exc)) from None


def read_prompt_file(path: Path | str, *, max_prompt_chars: int) -> list[list[dict[str, str]]]:
    """Conversations (lists of `{"role", "content"}`) from a prompt file; raises PromptFileError.
    `max_prompt_chars` is `labeling.max_prompt_chars` of the workspace's config."""
    return [messages for messages, _ in read_prompt_records(path, max_prompt_chars=max_prompt_chars)]


def read_prompt_records(path: Path | str, *, max_prompt_chars: int
                        ) -> list[tuple[list[dict[str, str]], dict[str, Any]]]:
    """(conversation, columns) of every record of a prompt file (`prompt_columns`); raises PromptFileError."""

    def parse(record: Any, where: str) -> tuple[list[dict[str, str]], dict[str, Any]]:
        return (parse_conversation(record, where, max_chars=max_prompt_chars),
                prompt_columns(record, where, max_chars=max_prompt_chars))

    try:
        return parse_file(path, IMPORT_KINDS["prompts"].schema, parse, what="prompts")
    except PromptFileError:
        raise
    except InputFileError as exc:  # not UTF-8, malformed CSV: already one line naming file and line
        raise PromptFileError(str(exc)) from None


def import_prompt_file(db: Database, path: Path | str, *, config: Config, imported_by: str, source: str | None,
                       options: dict[str, Any]) -> ImportOutcome:
    """The prompts import kind: every prompt of `path` into split `options["split"]` (train or eval), in one
    transaction; repeats are skipped and counted."""
    split = options.get("split") or "train"
    if split not in SPLITS:
        raise PromptFileError(f"the split must be {' or '.join(SPLITS)}, not {split!r}")
    records = read_prompt_records(path, max_prompt_chars=config.labeling.max_prompt_chars)
    result = add_prompts(db, [m for m, _ in records], split=split, source=source or Path(path).name,
                         columns=[c for _, c in records])
    names = sorted({name for _, columns in records for name in columns})
    with_columns = f" Columns for reward functions: {', '.join(names)}." if names else ""
    return ImportOutcome(result.added, result.duplicates,
                         f"Imported {result.added} prompts into split '{split}' ({result.duplicates} duplicates "
                         f"skipped).{with_columns}", {"split": split, "columns": names})
