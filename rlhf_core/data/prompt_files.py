"""Read prompt files (JSONL, CSV, or a `datasets.save_to_disk` directory) into chat conversations.

Parsing is all-or-nothing: the first bad record raises `PromptFileError` naming the file, the
line (or row) and the reason, before anything is written to the database.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

ROLES = ("system", "user", "assistant")
MAX_PROMPT_CHARS = 20_000


class PromptFileError(ValueError):
    """A prompt file that cannot be imported; the message says where and why."""


def parse_conversation(record: Any, where: str) -> list[dict[str, str]]:
    """The chat messages of one record's "prompt" (text) or "messages" ([{role, content}]) field;
    PromptFileError naming `where` otherwise. Control-pair files read their prompts with it too."""
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
            out.append({"role": m["role"], "content": m["content"]})
        if out[-1]["role"] != "user":
            raise PromptFileError(f"{where}: the last message must be from the user (the model answers it)")
    elif "prompt" in record:
        prompt = record["prompt"]
        if not isinstance(prompt, str):
            raise PromptFileError(f"{where}: 'prompt' must be text")
        out = [{"role": "user", "content": prompt}]
    else:
        raise PromptFileError(f"{where}: no 'prompt' or 'messages' field (found: {', '.join(record) or 'none'})")
    if not out[-1]["content"].strip():
        raise PromptFileError(f"{where}: the prompt is empty")
    if sum(len(m["content"]) for m in out) > MAX_PROMPT_CHARS:
        raise PromptFileError(f"{where}: the prompt is longer than {MAX_PROMPT_CHARS} characters")
    return out


def _read_jsonl(path: Path) -> list[list[dict[str, str]]]:
    conversations = []
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise PromptFileError(f"{path}:{lineno}: not valid JSON ({exc.msg})") from exc
            conversations.append(parse_conversation(record, f"{path}:{lineno}"))
    return conversations


def _read_csv(path: Path) -> list[list[dict[str, str]]]:
    with path.open(encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh)
        if not reader.fieldnames or "prompt" not in reader.fieldnames:
            raise PromptFileError(f"{path}:1: a CSV file needs a 'prompt' column (found: {reader.fieldnames})")
        # Line numbers count the header as line 1, as an editor shows them.
        return [parse_conversation({"prompt": row["prompt"] or ""}, f"{path}:{reader.line_num}") for row in reader]


def _read_dataset_dir(path: Path) -> list[list[dict[str, str]]]:
    import datasets

    try:
        ds = datasets.load_from_disk(str(path))
    except Exception as exc:  # noqa: BLE001 - datasets raises several types here
        raise PromptFileError(f"{path}: not a directory saved by datasets.save_to_disk ({exc})") from exc
    if isinstance(ds, datasets.DatasetDict):
        if "train" not in ds:
            raise PromptFileError(f"{path}: a DatasetDict needs a 'train' split (found: {', '.join(ds)})")
        ds = ds["train"]
    return [parse_conversation(dict(row), f"{path}: row {i}") for i, row in enumerate(ds)]


def read_prompt_file(path: Path | str) -> list[list[dict[str, str]]]:
    """Conversations (lists of `{"role", "content"}`) from a prompt file; raises PromptFileError."""
    path = Path(path).expanduser()
    if not path.exists():
        raise PromptFileError(f"{path}: no such file or directory")
    if path.is_dir():
        conversations = _read_dataset_dir(path)
    elif path.suffix.lower() in (".jsonl", ".json", ".ndjson"):
        conversations = _read_jsonl(path)
    elif path.suffix.lower() == ".csv":
        conversations = _read_csv(path)
    else:
        raise PromptFileError(f"{path}: unknown format (use .jsonl, .csv or a datasets directory)")
    if not conversations:
        raise PromptFileError(f"{path}: no prompts found")
    return conversations
