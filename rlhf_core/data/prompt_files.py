"""Prompts in: prompt files (JSONL, CSV, or a `datasets.save_to_disk` directory, through the one reader
`data.records`) into chat conversations, and the chat messages of one record (`parse_conversation`, which
every import kind uses for its prompt).

Parsing is all-or-nothing: the first bad record raises `PromptFileError` naming the file, the
line (or row) and the reason, before anything is written to the database. Files are read strictly
(`rlhf_core.data.file_checks`): UTF-8 only (a bad byte is named by its offset), no control
characters, no CSV with an unclosed quote or a ragged row, no prompt over
`labeling.max_prompt_chars` characters (the caller passes that limit in).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rlhf_core.config import Config, LabelingConfig
from rlhf_core.data.file_checks import InputFileError, check_text
from rlhf_core.data.records import ImportOutcome, parse_file
from rlhf_core.registry import IMPORT_KINDS
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


def _checked(value: str, where: str, field: str) -> str:
    try:
        return check_text(value, where, field=field)
    except InputFileError as exc:
        raise PromptFileError(str(exc)) from None


def read_prompt_file(path: Path | str, *, max_prompt_chars: int) -> list[list[dict[str, str]]]:
    """Conversations (lists of `{"role", "content"}`) from a prompt file; raises PromptFileError.
    `max_prompt_chars` is `labeling.max_prompt_chars` of the workspace's config."""
    try:
        return parse_file(path, IMPORT_KINDS["prompts"].schema,
                          lambda record, where: parse_conversation(record, where, max_chars=max_prompt_chars),
                          what="prompts")
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
    conversations = read_prompt_file(path, max_prompt_chars=config.labeling.max_prompt_chars)
    result = add_prompts(db, conversations, split=split, source=source or Path(path).name)
    return ImportOutcome(result.added, result.duplicates,
                         f"Imported {result.added} prompts into split '{split}' ({result.duplicates} duplicates "
                         "skipped).", {"split": split})
