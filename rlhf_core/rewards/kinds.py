"""The reward-function kinds that read the response alone (and the prompt's answer column): `format_regex`,
`length_window`, `answer_match`, `json_valid` (`python_tests` runs code: `python_tests`). Each `build(entry)`
returns a function with TRL's signature, fn(prompts, completions, **columns) -> list[float | None]; each
`check_*(entry)` raises ValueError at configuration time for what would fail later."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from rlhf_core.config import RewardFunctionConfig
from rlhf_core.rewards.answers import answer_score, completion_text

RewardFn = Callable[..., list[float | None]]
_FENCED_JSON = re.compile(r"```(?:json)?\s*\n(.*?)```", re.DOTALL | re.IGNORECASE)


def check_format_regex(entry: RewardFunctionConfig) -> None:
    try:
        re.compile(entry.pattern)
    except re.error as exc:
        raise ValueError(f"pattern {entry.pattern!r} does not compile: {exc}") from None


def format_regex(entry: RewardFunctionConfig) -> RewardFn:
    pattern = re.compile(entry.pattern)

    def format_regex(prompts: list[Any], completions: list[Any], **_: Any) -> list[float | None]:
        return [float(pattern.search(completion_text(c)) is not None) for c in completions]

    return format_regex


def check_length_window(entry: RewardFunctionConfig) -> None:
    if entry.min_tokens < 0 or entry.max_tokens < max(1, entry.min_tokens):
        raise ValueError(f"needs 0 <= min_tokens <= max_tokens and max_tokens >= 1 (got {entry.min_tokens} and "
                         f"{entry.max_tokens})")


def window_score(n: int, low: int, high: int) -> float:
    """1 for n in [low, high]; linearly down to 0 at low / 2 below it and at 2 x high above it."""
    if n < low:
        return max(0.0, (n - low / 2) / (low / 2))
    if n > high:
        return max(0.0, (2 * high - n) / high)
    return 1.0


def length_window(entry: RewardFunctionConfig) -> RewardFn:
    low, high = entry.min_tokens, entry.max_tokens

    def length_window(prompts: list[Any], completions: list[Any], completion_ids: list[list[int]] | None = None,
                      **_: Any) -> list[float | None]:
        # The model's tokens when the caller has them (TRL passes completion_ids), else whitespace-separated words.
        lengths = ([len(ids) for ids in completion_ids] if completion_ids is not None
                   else [len(completion_text(c).split()) for c in completions])
        return [window_score(n, low, high) for n in lengths]

    return length_window


def check_answer_match(entry: RewardFunctionConfig) -> None:
    if entry.compare == "math":
        try:
            import math_verify  # noqa: F401
        except ImportError:
            raise ValueError("compare = \"math\" needs the math-verify package: pip install math-verify") from None


def answer_match(entry: RewardFunctionConfig) -> RewardFn:
    column, compare = entry.column, entry.compare

    def answer_match(prompts: list[Any], completions: list[Any], **columns: Any) -> list[float | None]:
        golds = columns.get(column) or [None] * len(completions)
        return [answer_score(completion_text(c), gold, compare) for c, gold in zip(completions, golds, strict=True)]

    return answer_match


def check_json_valid(entry: RewardFunctionConfig) -> None:
    if not entry.schema:
        return
    import jsonschema

    try:
        jsonschema.validators.validator_for(entry.schema).check_schema(entry.schema)
    except jsonschema.SchemaError as exc:
        raise ValueError(f"the schema is not a valid JSON Schema: {exc.message}") from None


def json_document(text: str) -> str:
    """The JSON a response holds: its last fenced ```json block, else the whole response."""
    blocks = _FENCED_JSON.findall(text)
    return (blocks[-1] if blocks else text).strip()


def json_valid(entry: RewardFunctionConfig) -> RewardFn:
    validator = None
    if entry.schema:
        import jsonschema

        validator = jsonschema.validators.validator_for(entry.schema)(entry.schema)

    def json_valid(prompts: list[Any], completions: list[Any], **_: Any) -> list[float | None]:
        scores: list[float | None] = []
        for c in completions:
            try:
                value = json.loads(json_document(completion_text(c)))
            except (json.JSONDecodeError, RecursionError):
                scores.append(0.0)
                continue
            scores.append(float(validator is None or validator.is_valid(value)))
        return scores

    return json_valid
