"""Demonstrations in and out, in TRL's SFT formats: `rlhf demos import FILE` and `rlhf export --what demos`.

In: each record (a JSONL line, a CSV row with a header, or a row of a `datasets.save_to_disk` directory, every
split of a DatasetDict) is either a conversation, `messages` ending with the assistant's answer (the messages
before it are the prompt and end with the user's turn), or `prompt` + `completion`: text (standard) or chat
messages with one assistant message as the completion (conversational). In CSV, `prompt` and `completion` are
text and a `messages` cell holds the list as JSON. Other fields are ignored. Reading is all-or-nothing, as for
prompt and control files: the first bad record raises `InputFileError` with one line naming the file, the line
and what to fix, before anything is written.

Out: TRL's prompt-completion format (conversational by default: `prompt` the chat messages, `completion` one
assistant message; standard: two strings), split into train/test by prompt, as a `datasets` directory, JSON
Lines or Parquet with a dataset card. TRL's SFTTrainer trains on the train split as it is (completion-only loss,
which is the loss `rlhf train-sft` uses).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rlhf_core.config import Config
from rlhf_core.data.export import (
    FORMATS,
    DatasetExport,
    ExportError,
    check_out,
    held_out_prompt_ids,
    render_prompt_text,
    write_splits,
)
from rlhf_core.data.file_checks import InputFileError, check_text
from rlhf_core.data.prompt_files import DEFAULT_MAX_PROMPT_CHARS, PromptFileError, parse_conversation
from rlhf_core.data.records import ExportOutcome, ImportOutcome, parse_file
from rlhf_core.registry import IMPORT_KINDS
from storage import (
    MAX_DEMONSTRATION_CHARS,
    Database,
    DemonstrationSpec,
    add_demonstrations,
    demonstration_counts,
    demonstration_rows,
    utcnow,
)

SHAPES = "'messages' (ending with the assistant's answer), or 'prompt' and 'completion'"


def _prompt(record: dict[str, Any], where: str, max_prompt_chars: int) -> list[dict[str, str]]:
    try:
        return parse_conversation(record, where, max_chars=max_prompt_chars)
    except PromptFileError as exc:
        raise InputFileError(str(exc)) from None


def _answer(value: Any, where: str, field: str) -> str:
    """The answer text of `value`: text, or (conversational) a list holding one assistant message."""
    if isinstance(value, list):
        if len(value) != 1 or not isinstance(value[0], dict) or value[0].get("role") != "assistant":
            raise InputFileError(f"{where}: '{field}' as messages must be one {{\"role\": \"assistant\", "
                                 "\"content\": text}}")
        value = value[0].get("content")
    if not isinstance(value, str):
        raise InputFileError(f"{where}: the answer in '{field}' must be text, not {type(value).__name__}")
    text = check_text(value, where, field=field, max_chars=MAX_DEMONSTRATION_CHARS).strip()
    if not text:
        raise InputFileError(f"{where}: the answer in '{field}' is empty")
    return text


def demonstration_from_record(record: Any, where: str, *, max_prompt_chars: int = DEFAULT_MAX_PROMPT_CHARS
                              ) -> DemonstrationSpec:
    """One demonstration from a parsed record; InputFileError naming `where` and the fix otherwise."""
    if not isinstance(record, dict):
        raise InputFileError(f"{where}: expected an object with {SHAPES}")
    if "messages" in record:
        messages = record["messages"]
        if not isinstance(messages, list) or len(messages) < 2:
            raise InputFileError(f"{where}: 'messages' must list the prompt's turns and then the assistant's answer")
        last = messages[-1]
        if not isinstance(last, dict) or last.get("role") != "assistant":
            raise InputFileError(f"{where}: the last message must be the assistant's answer (the demonstration)")
        prompt = _prompt({"messages": messages[:-1]}, where, max_prompt_chars)
        return DemonstrationSpec(messages=prompt, text=_answer([last], where, "messages"))
    if "prompt" in record and "completion" in record:
        value = record["prompt"]
        prompt = _prompt({"messages": value} if isinstance(value, list) else {"prompt": value}, where,
                         max_prompt_chars)
        return DemonstrationSpec(messages=prompt, text=_answer(record["completion"], where, "completion"))
    raise InputFileError(f"{where}: no {SHAPES} (found: {', '.join(map(str, record)) or 'none'})")


def read_demonstration_file(path: Path | str, *, max_prompt_chars: int = DEFAULT_MAX_PROMPT_CHARS
                            ) -> list[DemonstrationSpec]:
    """Every demonstration of a JSONL or CSV file or a `datasets` directory (every split); InputFileError (one
    line: file, line, fix) for the first bad record, so nothing is written."""
    return parse_file(path, IMPORT_KINDS["demonstrations"].schema,
                      lambda record, where: demonstration_from_record(record, where, max_prompt_chars=max_prompt_chars),
                      what="demonstrations")


def import_demonstration_file(db: Database, path: Path | str, *, config: Config, imported_by: str,
                              source: str | None, options: dict[str, Any]) -> ImportOutcome:
    """The demonstrations import kind: read `path` whole, then store its demonstrations in one transaction (their
    new prompts join the train split). Repeats are counted as duplicates. The source is `source` or the file name."""
    specs = read_demonstration_file(path, max_prompt_chars=config.labeling.max_prompt_chars)
    name = source or Path(path).name
    result = add_demonstrations(db, specs, source=name, actor=imported_by)
    total = demonstration_counts(db)["demonstrations"]
    return ImportOutcome(result.added, result.duplicates,
                         f"Imported {result.added} demonstrations ({result.duplicates} duplicates skipped; "
                         f"{result.prompts_added} new train prompts); {total} in all. Fine-tune on them: rlhf "
                         "train-sft", {"source": name, "prompts_added": result.prompts_added})


# -- export ------------------------------------------------------------------------------------------------
DemonstrationExport = DatasetExport  # a demonstrations export holds nothing more


def _row(r: Any, conversational: bool, author: str | None) -> dict[str, Any]:  # noqa: ANN401 - a DemonstrationRow
    prompt: Any = r.prompt_messages if conversational else render_prompt_text(r.prompt_messages)
    completion: Any = [{"role": "assistant", "content": r.text}] if conversational else r.text
    return {"prompt": prompt, "completion": completion, "demonstration_id": r.id, "prompt_id": r.prompt_id,
            "author": author, "source": r.source, "edited": r.edited_sample_id is not None}


def _card(result: DemonstrationExport, test_fraction: float, anonymized: bool) -> str:
    form = ("conversational: `prompt` is a list of chat messages, `completion` one assistant message"
            if result.conversational else "standard: `prompt` and `completion` are plain strings")
    load = (f'datasets.load_from_disk("{result.path}")' if result.format == "hf"
            else f'datasets.load_dataset("{result.path}")')
    who = "pseudonyms `author-N`" if anonymized else "usernames"
    return f"""---
pretty_name: rlhf-loop demonstrations
tags: [sft, demonstrations, human-feedback]
---

# rlhf-loop demonstrations

Answers written by annotators on the labeling page (from scratch, or as an edit of a model response) or
imported, for supervised fine-tuning. Exported {utcnow():%Y-%m-%d %H:%M} UTC.

- rows: {result.n_rows} (train {result.n_train}, test {result.n_test}), split by prompt (about \
{test_fraction:.0%} of prompts held out); an empty split is not written.
- format: TRL prompt-completion, {form}. TRL's SFTTrainer trains on it as it is, with the loss on the
  completion only. Other columns: `demonstration_id`, `prompt_id`, `author` ({who}; null when imported),
  `source`, `edited` (an edit of a model response).

```python
import datasets
ds = {load}
```
"""


def export_demonstrations(db: Database, out: Path, *, fmt: str = "hf", test_fraction: float = 0.1, seed: int = 0,
                          conversational: bool = True, overwrite: bool = False, anonymize: bool = False
                          ) -> DemonstrationExport:
    """Write every demonstration to the directory `out` as a train/test SFT dataset with README.md: fmt "hf"
    (`DatasetDict.save_to_disk`), "jsonl" or "parquet" (train.* / test.*, `datasets.load_dataset(out)`).
    ExportError when there is nothing to export or `out` is in the way."""
    if fmt not in FORMATS:
        raise ExportError(f"format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    if not 0.0 <= test_fraction < 1.0:
        raise ExportError(f"test_fraction must be in [0, 1), got {test_fraction}")
    rows = demonstration_rows(db)
    if not rows:
        raise ExportError("nothing to export: no demonstrations yet; import some (rlhf demos import FILE) or let "
                          "annotators write them (labeling.demonstrations in rlhf.toml)")
    out = Path(out)
    check_out(out, overwrite)
    names: dict[str, str] = {}
    for r in rows:
        if r.author is not None:
            names.setdefault(r.author, f"author-{len(names) + 1}" if anonymize else r.author)
    held_out = held_out_prompt_ids([r.prompt_id for r in rows], test_fraction, seed)
    splits = {name: [_row(r, conversational, names.get(r.author)) for r in rows if (r.prompt_id in held_out) == test]
              for name, test in (("train", False), ("test", True))}
    splits = {name: part for name, part in splits.items() if part}
    write_splits(out, splits, fmt)
    result = DemonstrationExport(path=out, format=fmt, conversational=conversational, n_rows=len(rows),
                                 n_train=len(splits.get("train", [])), n_test=len(splits.get("test", [])))
    (out / "README.md").write_text(_card(result, test_fraction, anonymize), encoding="utf-8")
    return result


def write_demonstration_export(db: Database, out: Path, *, config: Config, fmt: str, options: dict[str, Any]
                               ) -> ExportOutcome:
    """The demos export kind (`rlhf export --what demos`): options `test_fraction`, `standard`, `overwrite`,
    `anonymize`."""
    options = dict(options)
    conversational = not options.pop("standard", False)
    result = export_demonstrations(db, out, fmt=fmt, conversational=conversational, **options)
    return ExportOutcome(result.path, result.n_rows,
                         f"Exported {result.n_rows} demonstrations ({result.n_train} train, {result.n_test} test) to "
                         f"{result.path} as {result.format}: TRL's SFTTrainer trains on the train split as it is.",
                         {"result": result})
