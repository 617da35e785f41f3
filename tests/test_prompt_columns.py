"""Prompt files' extra columns (answer, tests, ...): stored with each prompt (migration 0011) on SQLite and
PostgreSQL, read back by name, and refused with one line when a reward function could not be passed them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rlhf_core.config import Config
from rlhf_core.data.prompt_files import PromptFileError, import_prompt_file, read_prompt_records
from storage import add_prompts, list_prompts, prompt_column_names, prompt_columns


def test_columns_are_stored_and_read_back(db, tmp_path: Path):
    path = tmp_path / "tasks.jsonl"
    rows = [{"prompt": "What is 2 + 3?", "answer": 5},
            {"prompt": "Write square(x).", "tests": ["assert square(2) == 4"], "difficulty": "easy"},
            {"prompt": "Say hi.", "answer": None}]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    outcome = import_prompt_file(db, path, config=Config(), imported_by="t", source=None, options={})
    assert outcome.added == 3 and "Columns for reward functions: answer, difficulty, tests." in outcome.summary
    stored = {p.messages_json: prompt_columns(p) for p in list_prompts(db)}
    assert list(stored.values()) == [{"answer": 5}, {"tests": ["assert square(2) == 4"], "difficulty": "easy"}, {}]
    assert prompt_column_names(db, "train") == {"answer", "tests", "difficulty"}
    assert prompt_column_names(db, "eval") == set()
    again = import_prompt_file(db, path, config=Config(), imported_by="t", source=None, options={})
    assert again.added == 0 and again.duplicates == 3
    add_prompts(db, [[{"role": "user", "content": "plain"}]])  # callers without columns store none
    assert prompt_columns(list_prompts(db)[-1]) == {}


def test_csv_columns_and_refusals(tmp_path: Path):
    csv_path = tmp_path / "tasks.csv"
    csv_path.write_text("prompt,answer\nWhat is 1+1?,2\nNo answer here,\n", encoding="utf-8")
    assert [c for _, c in read_prompt_records(csv_path, max_prompt_chars=1000)] == [{"answer": "2"}, {}]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "q", "completions": ["x"]}\n', encoding="utf-8")
    with pytest.raises(PromptFileError, match=r"bad.jsonl:1: the field 'completions' would clash"):
        read_prompt_records(bad, max_prompt_chars=1000)
    long = tmp_path / "long.jsonl"
    long.write_text(json.dumps({"prompt": "q", "tests": "x" * 50}) + "\n", encoding="utf-8")
    with pytest.raises(PromptFileError, match=r"long.jsonl:1: the field 'tests' is 52 characters long"):
        read_prompt_records(long, max_prompt_chars=40)
