"""The schema and the dataset card of a preference export (`rlhf_core.data.export`): the metadata columns
with their types, the `datasets` features and the Hub card's YAML form of them, and the card's text.

`render_card` reads an `ExportResult` and the exported `PairVerdict`s by their attributes (this module is
imported by `export`, so it names their types only in words).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from datetime import datetime
from typing import Any

# Column -> dtype after prompt/chosen/rejected; one source for the `datasets` schema and the card's YAML.
METADATA_COLUMNS = {
    "pair_id": "int64", "prompt_id": "int64", "round": "int64", "n_annotators": "int64", "agreement": "float64",
    "strength": "string", "tie": "bool", "policy_version_chosen": "int64", "policy_version_rejected": "int64",
    "annotators": "list of string", "low_accuracy_annotators": "list of string",
    # "human", "ai" (AI judges only) or "human+ai"; annotator_kinds: each of `annotators`' kind, in its order.
    "annotator_kind": "string", "annotator_kinds": "list of string",
    "source": "string", "system_chosen": "string", "system_rejected": "string", "metadata": "string", "prior": "bool",
    # Why sampling ended each response: "eos", "length" (cut at max_new_tokens), null when unknown.
    "finish_reason_chosen": "string", "finish_reason_rejected": "string",
}


def dataset_features(conversational: bool):  # noqa: ANN201 - a datasets.Features
    """The `datasets` schema of an export: prompt, chosen, rejected (messages or strings), then METADATA_COLUMNS."""
    from datasets import Features, List, Value

    text = List({"role": Value("string"), "content": Value("string")}) if conversational else Value("string")
    meta = {name: List(Value("string")) if dtype == "list of string" else Value(dtype)
            for name, dtype in METADATA_COLUMNS.items()}
    return Features({"prompt": text, "chosen": text, "rejected": text, **meta})


def yaml_features(conversational: bool) -> list[dict[str, object]]:
    """The schema in the Hub card's `dataset_info.features` form, so JSON Lines reload with the same types."""
    def text(name: str) -> dict[str, object]:  # a fresh dict each time: YAML would alias a shared one
        message = [{"name": "role", "dtype": "string"}, {"name": "content", "dtype": "string"}]
        return {"name": name, "list": message} if conversational else {"name": name, "dtype": "string"}

    meta = [{"name": name, "list": "string"} if dtype == "list of string" else {"name": name, "dtype": dtype}
            for name, dtype in METADATA_COLUMNS.items()]
    return [text(name) for name in ("prompt", "chosen", "rejected")] + meta


def render_card(
    result: Any, kept: Sequence[Any], *, round: int | None, min_agreement: float | None,
    include_ties: bool, test_fraction: float, kinds: Sequence[str], exported_at: datetime, anonymized: bool = False,
    min_annotator_accuracy: float = 0.0,
) -> str:
    """The dataset card (README.md): YAML header for the Hub and `load_dataset`, then how the data came to be."""
    import yaml

    # No `configs` block: `load_dataset(dir)` finds train.*/test.* by name anyway, and with `configs`
    # datasets 5.2 keys its cache on the relative file names, so a re-export would reload stale rows.
    header = {"pretty_name": "rlhf-loop human preferences", "tags": ["rlhf", "human-feedback", "preference"],
              "dataset_info": {"features": yaml_features(result.conversational)}}
    per_pair = Counter(len(v.annotators) for v in kept)
    ties = sum(v.label == "tie" for v in kept)
    skipped = "; ".join(f"{reason.replace('_', ' ')}: {n}" for reason, n in result.skipped.items() if n) or "none"
    form = ("conversational: `prompt` is a list of chat messages, `chosen`/`rejected` are one assistant message"
            if result.conversational else "standard: `prompt`, `chosen` and `rejected` are plain strings")
    ties_text = (f"included ({ties} rows) with `tie: true` and chosen/rejected in the pair's own a/b order, "
                 "which carries no preference: filter them out before Bradley-Terry or DPO training"
                 if include_ties else "left out")
    counts = ", ".join(f"{k}: {n} pairs" for k, n in sorted(per_pair.items()))
    load = (f'datasets.load_from_disk("{result.path}")' if result.format == "hf"
            else f'datasets.load_dataset("{result.path}")')
    low_rows = sum(bool(v.low_accuracy_annotators) for v in kept)
    low_text = (f"minimum {min_annotator_accuracy:g} on control pairs; {result.n_low_accuracy_annotators} "
                f"annotator(s) below it, in `low_accuracy_annotators` of {low_rows} row(s). Their judgments "
                "still count in each pair's label: filter on that column to leave them out"
                if min_annotator_accuracy > 0 else "no minimum (`low_accuracy_annotators` is empty)")
    who = "pseudonyms `annotator-N`, the same N for the same person within this export" if anonymized \
        else "their usernames"
    body = f"""# rlhf-loop human preferences

Collected by online RLHF with rlhf-loop: responses sampled from the policy were paired and shown to
annotators in a browser, sides in random order; each annotator chose A better, B better, tie or both bad
(optionally with a strength: slight, clear, strong). Exported {exported_at:%Y-%m-%d %H:%M} UTC.

## Contents
- rows: {result.n_rows} (train {result.n_train}, test {result.n_test}); splits are by prompt, about \
{test_fraction:.0%} of prompts held out, so no prompt is in both. An empty split is not written.
- read: {result.n_judgments} judgments on {result.n_pairs_judged} pairs of kind {", ".join(kinds)}, \
round {"all" if round is None else round}
- judgments per exported pair: {counts}
- pairs left out: {skipped}

## How judgments became rows
- One row per pair. Its label is the choice most of its annotators made (plurality over a, b, tie,
  both bad); when two choices share the top count there is no majority and the pair is left out.
- `agreement` is the share of the pair's judgments that agree with that label.
  Minimum agreement: {"none" if min_agreement is None else min_agreement}.
- Ties: {ties_text}.
- Both bad: never exported: it says neither response is acceptable but orders nothing.
- Control pairs (operator-made pairs with a known answer, used to measure annotators) are never exported.
- Annotator accuracy: {low_text}
- Prior judgments (imported preference datasets, no annotator): {sum(v.prior for v in kept)} rows, `prior: true`.

## Format
TRL preference format, {form}. TRL's RewardTrainer and DPOTrainer use `prompt`, `chosen` and
`rejected` and ignore the other columns: `pair_id`, `prompt_id`, `round`, `n_annotators`, `agreement`,
`strength` (the majority's most common strength, or null), `tie`, `policy_version_chosen`,
`policy_version_rejected` (0 = base model; null for imported responses), `annotators` ({who}),
`low_accuracy_annotators` (those of `annotators` whose accuracy on control pairs was below the minimum above;
empty when it is off), `source` (the import a pair or prior came from; empty for sampled pairs),
`system_chosen`/`system_rejected` (the systems that wrote imported responses), `metadata` (an imported
record's own fields, JSON), `prior`, and `finish_reason_chosen`/`finish_reason_rejected` (why sampling
ended the response: `eos` when the model finished, `length` when it was cut at the token limit; null
when unknown, as for imported responses).

```python
import datasets
ds = {load}
```
"""
    return "---\n" + yaml.safe_dump(header, sort_keys=False) + "---\n\n" + body
