"""Step labels out (`rlhf export --what steps`): TRL's stepwise-supervision format, one row per labeled response:
`prompt` (the prompt as text), `completions` (its steps, as they were cut when labeled) and `labels` (one boolean
per step, true = the step is right), which TRL's PRMTrainer trains on as it is.

A response whose annotator marked the first wrong step is exported up to and including that step: nothing was said
about the steps after it, so they are left out rather than guessed. A neutral step counts as `prm.neutral` says
(true for "good"). Each set of labels is its own row (k annotators of one response: k rows, like judgments), split
by prompt into train and test.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rlhf_core.config import Config
from rlhf_core.data.export import ExportError, check_out, held_out_prompt_ids, render_prompt_text, write_splits
from rlhf_core.data.records import ExportOutcome
from storage import Database, StepLabelRow, step_label_rows, utcnow


def labeled_prefix(row: StepLabelRow, neutral: str = "good") -> tuple[list[str], list[bool]]:
    """The steps of a labeled response that carry a label, and each label as a boolean (neutral as `neutral`)."""
    kept = [(step, label) for step, label in zip(row.steps, row.labels, strict=True) if label is not None]
    return [step for step, _ in kept], [label == "good" or (label == "neutral" and neutral == "good")
                                        for _, label in kept]


def stepwise_row(row: StepLabelRow, neutral: str, annotator: str) -> dict[str, Any]:
    completions, labels = labeled_prefix(row, neutral)
    return {"prompt": render_prompt_text(row.prompt_messages), "completions": completions, "labels": labels,
            "step_label_id": row.id, "sample_id": row.sample_id, "prompt_id": row.prompt_id, "annotator": annotator,
            "first_wrong": row.first_wrong, "neutral_steps": row.labels.count("neutral")}


def _features():  # noqa: ANN202 - a datasets.Features
    from datasets import Features, List, Value

    return Features({"prompt": Value("string"), "completions": List(Value("string")), "labels": List(Value("bool")),
                     "step_label_id": Value("int64"), "sample_id": Value("int64"), "prompt_id": Value("int64"),
                     "annotator": Value("string"), "first_wrong": Value("int64"), "neutral_steps": Value("int64")})


def _card(out: Path, fmt: str, n_train: int, n_test: int, neutral: str, test_fraction: float) -> str:
    load = f'datasets.load_from_disk("{out}")' if fmt == "hf" else f'datasets.load_dataset("{out}")'
    return f"""---
pretty_name: rlhf-loop step labels
tags: [prm, stepwise-supervision, human-feedback]
---

# rlhf-loop step labels

Responses sampled from the policy, cut into steps and labeled step by step by annotators (good, neutral or bad, or
the first wrong step). Exported {utcnow():%Y-%m-%d %H:%M} UTC.

- rows: {n_train + n_test} (train {n_train}, test {n_test}), split by prompt (about {test_fraction:.0%} of prompts
  held out); an empty split is not written.
- format: TRL stepwise supervision: `prompt` (text), `completions` (the steps) and `labels` (true = the step is
  right); TRL's PRMTrainer trains on it as it is. A neutral step is {"true" if neutral == "good" else "false"}
  here (`prm.neutral`). Where the annotator marked the first wrong step, the row stops at that step. Other
  columns: `step_label_id`, `sample_id`, `prompt_id`, `annotator`, `first_wrong` (1-based, or null),
  `neutral_steps`.

```python
import datasets
ds = {load}
```
"""


def export_step_labels(db: Database, out: Path, *, fmt: str = "hf", neutral: str = "good", test_fraction: float = 0.1,
                       seed: int = 0, overwrite: bool = False, anonymize: bool = False) -> tuple[int, int]:
    """Write every set of step labels to the directory `out` as a train/test stepwise dataset with README.md;
    returns (train rows, test rows). ExportError when there is nothing to export or `out` is in the way."""
    if not 0.0 <= test_fraction < 1.0:
        raise ExportError(f"test_fraction must be in [0, 1), got {test_fraction}")
    rows = [r for r in step_label_rows(db) if any(label is not None for label in r.labels)]
    if not rows:
        raise ExportError("nothing to export: no step labels yet; set labeling.mode = \"steps\" (or "
                          "labeling.step_sets) and let annotators label, or run `rlhf simulate-steps`")
    out = Path(out)
    check_out(out, overwrite)
    names: dict[str, str] = {}
    for r in rows:
        names.setdefault(r.annotator, f"annotator-{len(names) + 1}" if anonymize else r.annotator)
    held_out = held_out_prompt_ids([r.prompt_id for r in rows], test_fraction, seed)
    splits = {name: [stepwise_row(r, neutral, names[r.annotator]) for r in rows if (r.prompt_id in held_out) == test]
              for name, test in (("train", False), ("test", True))}
    splits = {name: part for name, part in splits.items() if part}
    write_splits(out, splits, fmt, None if fmt == "jsonl" else _features())
    n_train, n_test = len(splits.get("train", [])), len(splits.get("test", []))
    (out / "README.md").write_text(_card(out, fmt, n_train, n_test, neutral, test_fraction), encoding="utf-8")
    return n_train, n_test


def write_step_export(db: Database, out: Path, *, config: Config, fmt: str, options: dict[str, Any]) -> ExportOutcome:
    """The steps export kind (`rlhf export --what steps`): options `test_fraction`, `overwrite`, `anonymize`."""
    n_train, n_test = export_step_labels(db, out, fmt=fmt, neutral=config.prm.neutral, **options)
    return ExportOutcome(Path(out), n_train + n_test,
                         f"Exported {n_train + n_test} labeled responses ({n_train} train, {n_test} test) to {out} as "
                         f"{fmt}: TRL's stepwise-supervision format (prompt / completions / labels), which its "
                         "PRMTrainer trains on as it is.")
