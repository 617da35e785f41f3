"""One `[[reward.functions]]` entry of rlhf.toml (a list of tables under `[reward]`) and its checks at configuration
time: each entry is a registered kind (`rlhf_core.registry.REWARD_FUNCTION_KINDS`) with its keys, or
`function = "module:function"` with TRL's reward-function signature. A bad entry (an unknown kind, a broken
reference, a missing key, a regex that does not compile, a bad schema) is refused with one line naming it."""

from __future__ import annotations

import dataclasses
import inspect
import math
from dataclasses import dataclass
from typing import Any, Literal

from rlhf_core.config.settings import ConfigError, setting
from rlhf_core.registry import (
    REWARD_FUNCTION_KINDS,
    REWARD_MODEL_COMPONENT,
    TRL_REWARD_ARGUMENTS,
    resolve,
    spoken_list,
)

AnswerCompare = Literal["auto", "numeric", "string", "math"]
# Keys every entry may set, whatever its kind.
COMMON_KEYS = ("kind", "function", "weight", "name")


@dataclass
class RewardFunctionConfig:
    """One `[[reward.functions]]` entry: a registered `kind` with its keys, or `function = "module:function"`."""

    kind: str = setting("", "A reward-function kind: format_regex, length_window, answer_match, json_valid or "
                            "python_tests (rlhf_core.registry.REWARD_FUNCTION_KINDS; a plugin's too). Or leave it "
                            "out and set `function`.",
                        choices=lambda: REWARD_FUNCTION_KINDS.names())
    function: str = setting("", "\"package.module:function\" with TRL's reward-function signature: "
                                "fn(prompts, completions, **columns) -> list[float | None] (conversational: each "
                                "completion is [{\"role\": \"assistant\", \"content\": text}]); its other required "
                                "parameters are prompt columns. TRL's trl.rewards.accuracy_reward works unchanged.")
    weight: float = setting(1.0, "Its weight in the combined reward (reward.combine).")
    name: str = setting("", "Its name in logs, charts and tables (default: the kind, or the function's name); "
                            "unique.")
    pattern: str = setting("", "format_regex: the Python regular expression (re.search; anchor with ^ and $).")
    min_tokens: int = setting(0, "length_window: the fewest tokens of a full-score response (the model's tokens "
                                 "where the caller has them, as in rounds; else whitespace-separated words).")
    max_tokens: int = setting(0, "length_window: the most tokens of a full-score response.")
    column: str = setting("", "answer_match, python_tests: the prompt column holding the answer or the tests.")
    compare: AnswerCompare = setting(
        "auto", "answer_match: \"numeric\" (the response's last number, within 1e-6), \"string\" (the final answer, "
                "case and spacing ignored), \"math\" (math-verify: LaTeX and expressions) or \"auto\" (numeric when "
                "the answer is a number, else string).")
    schema: dict = setting({}, "json_valid: a JSON Schema (as a TOML table) the response must satisfy; empty: any "
                               "valid JSON.")
    timeout_seconds: float = setting(10.0, "python_tests: wall-clock seconds one response's tests may run (CPU "
                                           "seconds too).")
    memory_mb: int = setting(512, "python_tests: address-space limit of the test process, MiB.")

    @property
    def label(self) -> str:
        """Its name: `name`, else the kind, else the function's attribute name."""
        return self.name or self.kind or self.function.rpartition(":")[2].rpartition(".")[2]


def entry_label(index: int, entry: RewardFunctionConfig) -> str:
    """How messages name an entry: '[[reward.functions]] #2 ("exact", answer_match)'."""
    what = entry.kind or entry.function or "no kind"
    return f'[[reward.functions]] #{index + 1} ("{entry.label}", {what})'


def function_columns(fn: Any) -> tuple[str, ...]:
    """The prompt columns a TRL-signature function needs: its required parameters other than TRL's own
    (`trl.rewards.accuracy_reward` -> ("solution",))."""
    try:
        parameters = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return ()
    return tuple(p.name for p in parameters
                 if p.default is inspect.Parameter.empty and p.name not in TRL_REWARD_ARGUMENTS
                 and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY))


def _check_function(entry: RewardFunctionConfig) -> None:
    reference = entry.function
    if reference.count(":") != 1 or not all(reference.split(":")):
        raise ValueError(f"function = {reference!r} must be \"package.module:function\"")
    try:
        fn = resolve(reference)
    except Exception as exc:  # noqa: BLE001 - whatever importing someone's module raises, say it in one line
        raise ValueError(f"function = {reference!r} cannot be loaded ({type(exc).__name__}: {exc}); check the "
                         "module is importable (PYTHONPATH) and defines it") from None
    if not callable(fn):
        raise ValueError(f"function = {reference!r} is not callable")
    try:
        parameters = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return
    takes_any = any(p.kind is p.VAR_KEYWORD for p in parameters.values())
    if "completions" not in parameters and not takes_any:
        raise ValueError(f"function = {reference!r} does not take `completions`: a reward function has TRL's "
                         "signature fn(prompts, completions, **columns)")


def check_reward_function(index: int, entry: RewardFunctionConfig) -> None:
    """ConfigError naming the entry for the first thing wrong with it (see the module docstring)."""
    where = entry_label(index, entry)
    if bool(entry.kind) == bool(entry.function):
        raise ConfigError(f"{where}: set exactly one of `kind` "
                          f"({spoken_list(REWARD_FUNCTION_KINDS.names())}) or `function = \"module:function\"`")
    if not (isinstance(entry.weight, float) and math.isfinite(entry.weight)):
        raise ConfigError(f"{where}: weight must be a finite number")
    if entry.label == REWARD_MODEL_COMPONENT:
        raise ConfigError(f"{where}: the name {REWARD_MODEL_COMPONENT!r} is the learned reward model's; choose another")
    defaults = RewardFunctionConfig()
    if entry.function:
        kind_keys: tuple[str, ...] = ()
        check = _check_function
    else:
        if entry.kind not in REWARD_FUNCTION_KINDS:
            raise ConfigError(f"{where}: unknown kind (known: {', '.join(REWARD_FUNCTION_KINDS.names())})")
        spec = REWARD_FUNCTION_KINDS[entry.kind]
        kind_keys = spec.keys
        missing = [k for k in spec.required if getattr(entry, k) == getattr(defaults, k)]
        if missing:
            raise ConfigError(f"{where}: needs {spoken_list([f'`{k}`' for k in missing], 'and')}")
        check = resolve(spec.check) if spec.check else None
    stray = [f.name for f in dataclasses.fields(entry) if f.name not in (*COMMON_KEYS, *kind_keys)
             and getattr(entry, f.name) != getattr(defaults, f.name)]
    if stray:
        takes = spoken_list([f"`{k}`" for k in kind_keys], "and") or "no other key"
        raise ConfigError(f"{where}: {spoken_list([f'`{k}`' for k in stray], 'and')} is not a key of "
                          f"{entry.kind or 'a function entry'} (it takes {takes})")
    if check is not None:
        try:
            check(entry)
        except ValueError as exc:
            raise ConfigError(f"{where}: {exc}") from None


def check_reward_functions(entries: list[RewardFunctionConfig], where: str) -> None:
    """Every entry checked (`check_reward_function`), and their names unique; messages start with `where`."""
    seen: dict[str, int] = {}
    for index, entry in enumerate(entries):
        try:
            check_reward_function(index, entry)
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from None
        if entry.label in seen:
            raise ConfigError(f"{where}: {entry_label(index, entry)}: the name is taken by entry "
                              f"#{seen[entry.label] + 1}; give one of them another `name`")
        seen[entry.label] = index
