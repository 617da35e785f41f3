"""Export judged pairs as a preference dataset (Hugging Face `datasets`, JSON Lines or Parquet) with a dataset card.

One row per pair, not per judgment: the k judgments of a pair are reduced to a majority label.
Rows follow TRL's preference format (`prompt`, `chosen`, `rejected`), so `trl.RewardTrainer` and
`trl.DPOTrainer` take the exported train split as it is; the extra metadata columns are ignored by both.

- Conversational form (default): `prompt` is the chat message list, `chosen`/`rejected` are
  `[{"role": "assistant", "content": text}]`; TRL applies the model's chat template.
- Standard form (`conversational=False`): plain strings; a one-message prompt is that message's
  text, a longer conversation is rendered as "User: ...\\n\\nAssistant: ..." turns.
Only one form is written: TRL decides how to treat a row by the type of these three columns.
"""

from __future__ import annotations

import dataclasses
import json
import random
from collections import Counter, defaultdict
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlhf_core.config import Config
from rlhf_core.data.annotator_quality import low_accuracy_annotators
from rlhf_core.data.export_card import dataset_features as _features
from rlhf_core.data.export_card import render_card
from rlhf_core.data.records import ExportOutcome
from rlhf_core.registry import EXPORT_FORMATS
from storage import STRENGTHS, Database, JudgmentRow, judgment_rows, prior_preference_rows, utcnow

FORMATS = EXPORT_FORMATS
SKIP_REASONS = ("no_majority", "majority_both_bad", "majority_tie", "below_min_agreement")


class ExportError(ValueError):
    """Nothing to export, or bad export arguments; the message says what to change."""


@dataclass(frozen=True)
class PairVerdict:
    """All judgments of one pair reduced to one label.

    label: the unique most frequent choice ("a", "b", "tie", "both_bad"), None when two choices share
    the top count. agreement: share of the pair's judgments equal to `label` (0.0 when None).
    strength: the most common strength among the majority's judgments (ties go to the weaker), or None.
    low_accuracy_annotators: those of `annotators` whose control-pair accuracy is below the threshold.
    """

    pair_id: int | None  # None: a prior judgment
    prompt_id: int
    prompt_messages: list[dict[str, str]]
    round: int | None
    text_a: str
    text_b: str
    version_a: int | None  # None: an imported response (`system_a` names its writer)
    version_b: int | None
    label: str | None
    agreement: float
    strength: str | None
    annotators: tuple[str, ...]
    low_accuracy_annotators: tuple[str, ...] = ()
    system_a: str | None = None  # imported pairs: the systems that wrote the responses
    system_b: str | None = None
    source: str = ""  # the import's name; "" for sampled pairs
    metadata_json: str | None = None  # an imported record's `metadata`
    prior: bool = False  # a prior judgment (`rlhf preferences import`), exported with --include-prior
    finish_a: str | None = None  # "eos", "length" (cut at max_new_tokens) or None (unknown, imported)
    finish_b: str | None = None


@dataclass
class DatasetExport:
    """Where an export went and what it holds: rows in all and per split."""

    path: Path
    format: str
    conversational: bool
    n_rows: int
    n_train: int
    n_test: int


@dataclass
class ExportResult(DatasetExport):
    """A preference export. `skipped` counts judged pairs left out, by reason (SKIP_REASONS)."""

    n_judgments: int
    n_pairs_judged: int
    n_pairs_skipped: int
    skipped: dict[str, int] = field(default_factory=dict)
    n_low_accuracy_annotators: int = 0  # annotators below min_annotator_accuracy (0 when it is off)


def aggregate_pairs(rows: Sequence[JudgmentRow], low_accuracy: Collection[str] = ()) -> list[PairVerdict]:
    """One verdict per pair (ordered by pair id) from its judgment rows: plurality vote over all four choices.

    low_accuracy: annotator names (as they appear in `rows`) to list in each verdict's
    `low_accuracy_annotators`; their judgments still count in the vote.
    """
    by_pair: dict[int, list[JudgmentRow]] = defaultdict(list)
    for row in rows:
        by_pair[row.pair_id].append(row)
    verdicts = []
    for pair_id in sorted(by_pair):
        judged = by_pair[pair_id]
        top = Counter(r.choice for r in judged).most_common(2)
        label = None if len(top) == 2 and top[0][1] == top[1][1] else top[0][0]
        majority = [r for r in judged if r.choice == label]
        strengths = Counter(r.strength for r in majority if r.strength)
        strength = max(strengths, key=lambda s: (strengths[s], -STRENGTHS.index(s)), default=None)
        first = judged[0]
        verdicts.append(PairVerdict(
            pair_id=pair_id, prompt_id=first.prompt_id, prompt_messages=first.prompt_messages, round=first.round,
            text_a=first.text_a, text_b=first.text_b, version_a=first.version_a, version_b=first.version_b,
            label=label, agreement=len(majority) / len(judged), strength=strength,
            annotators=tuple(sorted(r.annotator for r in judged)),
            low_accuracy_annotators=tuple(sorted(r.annotator for r in judged if r.annotator in low_accuracy)),
            system_a=first.system_a, system_b=first.system_b, source=first.source, metadata_json=first.metadata_json,
            finish_a=first.finish_a, finish_b=first.finish_b,
        ))
    return verdicts


def prior_verdicts(db: Database) -> list[PairVerdict]:
    """Prior judgments (`rlhf preferences import`) as rows: chosen is side a, no annotators, no pair."""
    return [PairVerdict(None, r.prompt_id, r.prompt_messages, None, r.chosen, r.rejected, None, None, "a", 1.0, None,
                        (), source=r.source, prior=True) for r in prior_preference_rows(db)]


def pseudonyms(rows: Sequence[JudgmentRow]) -> dict[str, str]:
    """username -> `annotator-N`, N in the order of each annotator's first judgment in `rows`."""
    names: dict[str, str] = {}
    for row in sorted(rows, key=lambda r: r.judgment_id):
        names.setdefault(row.annotator, f"annotator-{len(names) + 1}")
    return names


def pseudonymized(rows: Sequence[JudgmentRow]) -> list[JudgmentRow]:
    """The rows with each username replaced by its pseudonym (`pseudonyms`)."""
    names = pseudonyms(rows)
    return [dataclasses.replace(row, annotator=names[row.annotator]) for row in rows]


def skip_reason(verdict: PairVerdict, *, include_ties: bool, min_agreement: float | None) -> str | None:
    """Why this pair is not exported (one of SKIP_REASONS), or None when it is.

    both_bad says neither response is acceptable but orders nothing, so it is never a preference.
    """
    if verdict.label is None:
        return "no_majority"
    if verdict.label == "both_bad":
        return "majority_both_bad"
    if verdict.label == "tie" and not include_ties:
        return "majority_tie"
    if min_agreement is not None and verdict.agreement < min_agreement:
        return "below_min_agreement"
    return None


def render_prompt_text(messages: list[dict[str, str]]) -> str:
    """A chat prompt as plain text for the standard (string) form."""
    if len(messages) == 1 and messages[0]["role"] == "user":
        return messages[0]["content"]
    return "\n\n".join(f"{m['role'].capitalize()}: {m['content']}" for m in messages)


def preference_row(verdict: PairVerdict, *, conversational: bool) -> dict[str, object]:
    """The exported row of one pair; a tie keeps a as `chosen` and b as `rejected` and sets `tie`."""
    b_wins = verdict.label == "b"
    chosen, rejected = (verdict.text_b, verdict.text_a) if b_wins else (verdict.text_a, verdict.text_b)
    if conversational:
        prompt: object = [{"role": m["role"], "content": m["content"]} for m in verdict.prompt_messages]
        chosen_col: object = [{"role": "assistant", "content": chosen}]
        rejected_col: object = [{"role": "assistant", "content": rejected}]
    else:
        prompt, chosen_col, rejected_col = render_prompt_text(verdict.prompt_messages), chosen, rejected
    return {
        "prompt": prompt, "chosen": chosen_col, "rejected": rejected_col,
        "pair_id": verdict.pair_id, "prompt_id": verdict.prompt_id, "round": verdict.round,
        "n_annotators": len(verdict.annotators), "agreement": verdict.agreement, "strength": verdict.strength,
        "tie": verdict.label == "tie",
        "policy_version_chosen": verdict.version_b if b_wins else verdict.version_a,
        "policy_version_rejected": verdict.version_a if b_wins else verdict.version_b,
        "annotators": list(verdict.annotators),
        "low_accuracy_annotators": list(verdict.low_accuracy_annotators),
        "source": verdict.source, "system_chosen": verdict.system_b if b_wins else verdict.system_a,
        "system_rejected": verdict.system_a if b_wins else verdict.system_b, "metadata": verdict.metadata_json,
        "prior": verdict.prior,
        "finish_reason_chosen": verdict.finish_b if b_wins else verdict.finish_a,
        "finish_reason_rejected": verdict.finish_a if b_wins else verdict.finish_b,
    }


def held_out_prompt_ids(prompt_ids: Sequence[int], test_fraction: float, seed: int) -> set[int]:
    """The prompts held out for the test split: about `test_fraction` of the distinct prompts.

    At least one when there are two or more prompts and test_fraction > 0; never all of them, so a
    single prompt gives an empty test split. Deterministic in (prompt ids, test_fraction, seed).
    """
    prompts = sorted(set(prompt_ids))
    random.Random(seed).shuffle(prompts)
    n_test = round(len(prompts) * test_fraction)
    if test_fraction > 0 and len(prompts) >= 2:
        n_test = max(n_test, 1)
    return set(prompts[:min(n_test, max(len(prompts) - 1, 0))])


def _nothing_to_export(n_pairs: int, skipped: dict[str, int], kinds: Sequence[str], round: int | None) -> ExportError:
    where = f"pairs of kind {', '.join(kinds)}" + (f" in round {round}" if round is not None else "")
    if n_pairs == 0:
        return ExportError(f"nothing to export: no judgments on {where}; collect some in the labeling app "
                           "or run `rlhf simulate`")
    reasons = ", ".join(f"{n} {reason.replace('_', ' ')}" for reason, n in skipped.items() if n)
    hints = []
    if skipped["majority_tie"]:
        hints.append("--include-ties exports pairs judged a tie")
    if skipped["below_min_agreement"]:
        hints.append("a lower --min-agreement keeps more pairs")
    return ExportError(f"nothing to export: none of the {n_pairs} judged {where} passes the filters "
                       f"({reasons})" + (f"; {'; '.join(hints)}" if hints else ""))


def check_out(out: Path, overwrite: bool) -> None:
    """ExportError when `out` is a file, or a non-empty directory without `overwrite`."""
    if out.exists() and not out.is_dir():
        raise ExportError(f"{out} is a file; every export format writes a directory (train/test splits + README.md)")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise ExportError(f"{out} already exists and is not empty; choose a new path or pass --overwrite")


def write_splits(out: Path, splits: dict[str, list[dict[str, object]]], fmt: str, features: Any = None) -> None:
    """Write each split's rows into the directory `out` (made; stale split files of another format removed) as
    fmt "hf" (`DatasetDict.save_to_disk`), "jsonl" or "parquet" (train.* / test.*), typed by `features` if given."""
    out.mkdir(parents=True, exist_ok=True)
    for stale in ("train.jsonl", "test.jsonl", "train.parquet", "test.parquet"):
        (out / stale).unlink(missing_ok=True)
    if fmt == "jsonl":
        for name, split in splits.items():
            lines = (json.dumps(row, ensure_ascii=False) + "\n" for row in split)
            (out / f"{name}.jsonl").write_text("".join(lines), encoding="utf-8")
        return
    from datasets import Dataset, DatasetDict

    tables = {name: Dataset.from_list(split, features=features) for name, split in splits.items()}
    if fmt == "hf":
        DatasetDict(tables).save_to_disk(str(out))
    else:
        for name, table in tables.items():
            table.to_parquet(str(out / f"{name}.parquet"))


def export_preferences(
    db: Database, out: Path, *, fmt: str, round: int | None = None, min_agreement: float | None = None,
    include_ties: bool = False, test_fraction: float = 0.1, seed: int = 0, conversational: bool = True,
    kinds: Sequence[str] = ("train", "imported"), overwrite: bool = False, anonymize: bool = False,
    min_annotator_accuracy: float = 0.0, include_prior: bool = False,
) -> ExportResult:
    """Write the judged pairs of `kinds` (optionally one `round`) as a train/test preference dataset in `out`.

    `out` is always a directory holding README.md (the dataset card) and the splits:
    fmt "hf" -> `DatasetDict.save_to_disk(out)` (reload with `datasets.load_from_disk`);
    "jsonl" -> train.jsonl / test.jsonl; "parquet" -> train.parquet / test.parquet (both reload with
    `datasets.load_dataset(str(out))`, typed by the card's `dataset_info`). An empty test split is not written.
    A pair is exported when its majority label (see `aggregate_pairs`) is a or b, or tie with
    `include_ties`, and its agreement is at least `min_agreement`; both_bad pairs never are.
    No prompt appears in both splits. `anonymize` replaces usernames with `annotator-N` (numbered in
    the order of their first judgment, consistent within the export). `min_annotator_accuracy` (the
    workspace's `reward.min_annotator_accuracy`; 0 = off) marks, in each row's `low_accuracy_annotators`,
    the annotators whose control-pair accuracy is below it. `include_prior` adds the prior judgments (`prior`
    true). Raises ExportError when no pair qualifies."""
    if fmt not in FORMATS:
        raise ExportError(f"format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    if not 0.0 <= test_fraction < 1.0:
        raise ExportError(f"test_fraction must be in [0, 1), got {test_fraction}")
    if min_agreement is not None and not 0.0 <= min_agreement <= 1.0:
        raise ExportError(f"min_agreement is a share of judgments in [0, 1], got {min_agreement}")
    if not 0.0 <= min_annotator_accuracy <= 1.0:
        raise ExportError(f"min_annotator_accuracy is a share of control pairs in [0, 1], got {min_annotator_accuracy}")
    rows = judgment_rows(db, round=round, kinds=tuple(kinds))
    low = low_accuracy_annotators(db, min_annotator_accuracy) & {row.annotator for row in rows}
    if anonymize:
        names = pseudonyms(rows)
        rows = pseudonymized(rows)
        low = {names[name] for name in low}
    verdicts = aggregate_pairs(rows, low) + (prior_verdicts(db) if include_prior else [])
    skipped = dict.fromkeys(SKIP_REASONS, 0)
    kept = []
    for verdict in verdicts:
        reason = skip_reason(verdict, include_ties=include_ties, min_agreement=min_agreement)
        if reason:
            skipped[reason] += 1
        else:
            kept.append(verdict)
    if not kept:
        raise _nothing_to_export(len(verdicts), skipped, kinds, round)

    held_out = held_out_prompt_ids([v.prompt_id for v in kept], test_fraction, seed)
    splits: dict[str, list[dict[str, object]]] = {}
    for name, part in (("train", [v for v in kept if v.prompt_id not in held_out]),
                       ("test", [v for v in kept if v.prompt_id in held_out])):
        if part:  # an empty split cannot be reloaded by `datasets`, so it is left out
            splits[name] = [preference_row(v, conversational=conversational) for v in part]

    out = Path(out)
    check_out(out, overwrite)
    write_splits(out, splits, fmt, _features(conversational))
    result = ExportResult(
        path=out, format=fmt, conversational=conversational, n_rows=len(kept),
        n_train=len(splits.get("train", [])), n_test=len(splits.get("test", [])), n_judgments=len(rows),
        n_pairs_judged=len(verdicts), n_pairs_skipped=sum(skipped.values()), skipped=skipped,
        n_low_accuracy_annotators=len(low),
    )
    card = render_card(result, kept, round=round, min_agreement=min_agreement, include_ties=include_ties,
                       test_fraction=test_fraction, kinds=kinds, exported_at=utcnow(), anonymized=anonymize,
                       min_annotator_accuracy=min_annotator_accuracy)
    (out / "README.md").write_text(card, encoding="utf-8")
    return result


def write_preference_export(db: Database, out: Path, *, config: Config, fmt: str, options: dict[str, Any]
                            ) -> ExportOutcome:
    """The preferences export kind (`rlhf export --what preferences`, the operator page's export): options are
    `export_preferences`' keywords; `min_annotator_accuracy` defaults to reward.min_annotator_accuracy and
    `standard` (plain-text prompt/chosen/rejected) to False."""
    options = dict(options)
    threshold = options.pop("min_annotator_accuracy", None)
    threshold = config.reward.min_annotator_accuracy if threshold is None else threshold
    conversational = not options.pop("standard", False)
    result = export_preferences(db, out, fmt=fmt, conversational=conversational, min_annotator_accuracy=threshold,
                                **options)
    skipped = ", ".join(f"{k}: {v}" for k, v in result.skipped.items() if v) or "none"
    summary = (f"Exported {result.n_rows} pairs ({result.n_train} train, {result.n_test} test) to {result.path} "
               f"as {result.format}; skipped {skipped}.")
    if threshold > 0:
        summary += (f"\n{result.n_low_accuracy_annotators} annotator(s) below control accuracy {threshold:g}: listed "
                    "in the low_accuracy_annotators column.")
    return ExportOutcome(result.path, result.n_rows, summary, {"result": result})
