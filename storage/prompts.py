"""Prompts: chat message lists, de-duplicated by content, with the prompt file's other fields as named columns
(`answer`, `tests`, ...) that reward functions read."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from sqlmodel import func, select

from storage.db import Database
from storage.tables import SPLITS, Prompt


@dataclass
class ImportResult:
    added: int
    duplicates: int


def canonical_messages(messages: list[dict[str, str]]) -> str:
    return json.dumps([{"role": m["role"], "content": m["content"]} for m in messages], ensure_ascii=False)


def content_hash(messages: list[dict[str, str]]) -> str:
    return hashlib.sha256(canonical_messages(messages).encode()).hexdigest()


def add_prompts(
    db: Database, conversations: list[list[dict[str, str]]], *, split: str = "train", source: str = "",
    columns: list[dict[str, Any]] | None = None,
) -> ImportResult:
    """Insert conversations in one transaction; ones already stored (or repeated) are counted, not added (their
    columns too). `columns[i]`: the other fields of conversation i (JSON values by name), stored with it."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, not {split!r}")
    if columns is not None and len(columns) != len(conversations):
        raise ValueError(f"{len(columns)} column rows for {len(conversations)} conversations")
    extra = columns or [{}] * len(conversations)
    hashes = [content_hash(m) for m in conversations]
    added = 0
    with db.session() as s:
        existing: set[str] = set()
        for start in range(0, len(hashes), 500):
            chunk = hashes[start:start + 500]
            existing.update(s.exec(select(Prompt.content_hash).where(Prompt.content_hash.in_(chunk))).all())
        for messages, h, named in zip(conversations, hashes, extra):
            if h in existing:
                continue
            existing.add(h)
            s.add(Prompt(messages_json=canonical_messages(messages), content_hash=h, split=split, source=source,
                         columns_json=json.dumps(named, ensure_ascii=False, sort_keys=True)))
            added += 1
    return ImportResult(added=added, duplicates=len(conversations) - added)


def prompt_messages(prompt: Prompt) -> list[dict[str, str]]:
    return json.loads(prompt.messages_json)


def prompt_columns(prompt: Prompt) -> dict[str, Any]:
    """The prompt file's other fields of `prompt` ({} when it had none)."""
    return json.loads(prompt.columns_json or "{}")


def prompt_column_names(db: Database, split: str | None = None) -> set[str]:
    """Every column name that some stored prompt (of `split`) has."""
    with db.session() as s:
        q = select(Prompt.columns_json).where(Prompt.columns_json != "{}")
        if split:
            q = q.where(Prompt.split == split)
        return {name for text in s.exec(q) for name in json.loads(text)}


def list_prompts(db: Database, split: str | None = None, limit: int | None = None) -> list[Prompt]:
    with db.session() as s:
        q = select(Prompt).order_by(Prompt.id)
        if split:
            q = q.where(Prompt.split == split)
        if limit:
            q = q.limit(limit)
        return list(s.exec(q))


def count_prompts(db: Database, split: str | None = None) -> int:
    with db.session() as s:
        q = select(func.count()).select_from(Prompt)
        if split:
            q = q.where(Prompt.split == split)
        return s.exec(q).one()
