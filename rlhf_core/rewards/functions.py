"""The configured reward functions (`[[reward.functions]]`) built once, and scoring responses with all of them:
`score_with_functions` is the one place every caller goes through (policy updates, `rlhf rewards check`,
best-of-N "by functions"). Each function is called as TRL's GRPOTrainer calls one: prompts (conversations),
completions (conversational: `[{"role": "assistant", "content": text}]`), `completion_ids` when known, and every
prompt column as a keyword list (None where a prompt lacks it); only the keywords it takes are passed."""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from rlhf_core.config import RewardFunctionConfig
from rlhf_core.config.reward_functions import entry_label, function_columns
from rlhf_core.registry import REWARD_FUNCTION_KINDS, resolve, spoken_list

Conversation = list[dict[str, str]]


class RewardFunctionError(ValueError):
    """A reward function that failed or answered out of shape; the message names its entry."""


@dataclass(frozen=True)
class RewardFunction:
    """One built entry: its name, weight, the callable (TRL's signature), the prompt columns it needs."""

    name: str
    weight: float
    fn: Callable[..., list[float | None]]
    columns: tuple[str, ...]
    label: str  # how messages name its entry

    def keywords(self, available: dict[str, Any]) -> dict[str, Any]:
        """The keyword arguments it takes out of `available` (all of them when it takes **kwargs)."""
        try:
            parameters = inspect.signature(self.fn).parameters
        except (TypeError, ValueError):
            return available
        if any(p.kind is p.VAR_KEYWORD for p in parameters.values()):
            return available
        return {k: v for k, v in available.items() if k in parameters}


def build_reward_functions(entries: list[RewardFunctionConfig]) -> list[RewardFunction]:
    """The entries (checked when the configuration was read) as callables, in their order."""
    built = []
    for index, entry in enumerate(entries):
        if entry.function:
            fn, columns = resolve(entry.function), function_columns(resolve(entry.function))
        else:
            spec = REWARD_FUNCTION_KINDS[entry.kind]
            fn = resolve(spec.build)(entry)
            columns = (getattr(entry, spec.column_key),) if spec.column_key else ()
        built.append(RewardFunction(entry.label, entry.weight, fn, columns, entry_label(index, entry)))
    return built


def missing_columns(functions: Sequence[RewardFunction], available: set[str]) -> str | None:
    """A sentence naming the first function whose prompt column no stored prompt has, or None."""
    for f in functions:
        absent = [c for c in f.columns if c not in available]
        if absent:
            have = ", ".join(sorted(available)) or "none"
            return (f"{f.label} reads the prompt column {spoken_list([repr(c) for c in absent], 'and')}, which no "
                    f"train prompt has (their columns: {have}); import prompts with that field (`rlhf prompts "
                    "import FILE`) or change the entry's column")
    return None


@dataclass
class FunctionScores:
    """Each function's scores of the responses (None: does not apply), in configuration order."""

    names: list[str]
    weights: list[float]
    values: dict[str, list[float | None]]

    def total(self) -> list[float]:
        """The weighted sum per response, a None counting 0 (as TRL sums its reward functions)."""
        n = len(next(iter(self.values.values()), []))
        return [sum(w * (self.values[name][i] or 0.0) for name, w in zip(self.names, self.weights, strict=True))
                for i in range(n)]


def _checked(function: RewardFunction, scores: Any, n: int) -> list[float | None]:
    if not isinstance(scores, list | tuple) or len(scores) != n:
        raise RewardFunctionError(f"{function.label} returned {type(scores).__name__} of length "
                                  f"{len(scores) if hasattr(scores, '__len__') else '?'} for {n} responses; a reward "
                                  "function returns one float (or None) per completion")
    out: list[float | None] = []
    for value in scores:
        if value is None:
            out.append(None)
            continue
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise RewardFunctionError(f"{function.label} returned {value!r}; expected a float or None") from None
        out.append(number if math.isfinite(number) else None)
    return out


def score_with_functions(functions: Sequence[RewardFunction], prompts: Sequence[Conversation],
                         completions: Sequence[str], columns: Sequence[dict[str, Any]],
                         completion_ids: Sequence[list[int]] | None = None) -> FunctionScores:
    """Score `completions` (texts; row i answers `prompts[i]`, whose stored columns are `columns[i]`) with every
    function. Raises RewardFunctionError naming the entry when one fails or answers out of shape."""
    n = len(completions)
    if not (len(prompts) == len(columns) == n):
        raise ValueError(f"{len(prompts)} prompts, {len(columns)} column rows and {n} completions: one each per row")
    names = sorted({name for row in columns for name in row})
    available: dict[str, Any] = {name: [row.get(name) for row in columns] for name in names}
    available.update(prompts=[list(p) for p in prompts],
                     completions=[[{"role": "assistant", "content": text}] for text in completions])
    if completion_ids is not None:
        available["completion_ids"] = [list(ids) for ids in completion_ids]
    values: dict[str, list[float | None]] = {}
    for function in functions:
        try:
            scores = function.fn(**function.keywords(available))
        except RewardFunctionError:
            raise
        except Exception as exc:  # noqa: BLE001 - someone's function: name it and what it raised, in one line
            raise RewardFunctionError(f"{function.label} failed: {type(exc).__name__}: {exc}") from exc
        values[function.name] = _checked(function, scores, n)
    return FunctionScores([f.name for f in functions], [f.weight for f in functions], values)
