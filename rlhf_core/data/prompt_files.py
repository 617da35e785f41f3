"""Read prompt files (JSONL, CSV, or a `datasets.save_to_disk` directory) into chat conversations.

Parsing is all-or-nothing: the first bad record raises `PromptFileError` naming the file, the
line (or row) and the reason, before anything is written to the database. Files are read strictly
(`rlhf_core.data.file_checks`): UTF-8 only (a bad byte is named by its offset), no control
characters, no CSV with an unclosed quote or a ragged row, no prompt over
`labeling.max_prompt_chars` characters (the caller passes that limit in).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rlhf_core.config import LabelingConfig
from rlhf_core.data.file_checks import InputFileError, check_text, iter_lines, read_csv_rows

ROLES = ("system", "user", "assistant")
DEFAULT_MAX_PROMPT_CHARS = LabelingConfig().max_prompt_chars


class PromptFileError(ValueError):
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


def _read_jsonl(path: Path, max_chars: int) -> list[list[dict[str, str]]]:
    conversations = []
    for lineno, line in iter_lines(path):
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise PromptFileError(f"{path}:{lineno}: not valid JSON ({exc.msg})") from None
        conversations.append(parse_conversation(record, f"{path}:{lineno}", max_chars=max_chars))
    return conversations


def _read_csv(path: Path, max_chars: int) -> list[list[dict[str, str]]]:
    # Line numbers are where each row starts, counting the header as line 1, as an editor shows them.
    return [parse_conversation({"prompt": row["prompt"]}, f"{path}:{line}", max_chars=max_chars)
            for line, row in read_csv_rows(path, ("prompt",))]


def _read_dataset_dir(path: Path, max_chars: int) -> list[list[dict[str, str]]]:
    import datasets

    try:
        ds = datasets.load_from_disk(str(path))
    except Exception as exc:  # noqa: BLE001 - datasets raises several types here
        raise PromptFileError(f"{path}: not a directory saved by datasets.save_to_disk ({exc})") from None
    if isinstance(ds, datasets.DatasetDict):
        if "train" not in ds:
            raise PromptFileError(f"{path}: a DatasetDict needs a 'train' split (found: {', '.join(ds)})")
        ds = ds["train"]
    return [parse_conversation(dict(row), f"{path}: row {i}", max_chars=max_chars) for i, row in enumerate(ds)]


def read_prompt_file(path: Path | str, *, max_prompt_chars: int) -> list[list[dict[str, str]]]:
    """Conversations (lists of `{"role", "content"}`) from a prompt file; raises PromptFileError.
    `max_prompt_chars` is `labeling.max_prompt_chars` of the workspace's config."""
    path = Path(path).expanduser()
    if not path.exists():
        raise PromptFileError(f"{path}: no such file or directory")
    try:
        if path.is_dir():
            conversations = _read_dataset_dir(path, max_prompt_chars)
        elif path.suffix.lower() in (".jsonl", ".json", ".ndjson"):
            conversations = _read_jsonl(path, max_prompt_chars)
        elif path.suffix.lower() == ".csv":
            conversations = _read_csv(path, max_prompt_chars)
        else:
            raise PromptFileError(f"{path}: unknown format (use .jsonl, .csv or a datasets directory)")
    except InputFileError as exc:  # not UTF-8, malformed CSV: already one line naming file and line
        raise PromptFileError(str(exc)) from None
    except OSError as exc:
        raise PromptFileError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    if not conversations:
        raise PromptFileError(f"{path}: no prompts found")
    return conversations
