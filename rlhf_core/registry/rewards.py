"""Reward-function kinds: checks of a response that score it beside (or instead of) the learned reward model
(`[[reward.functions]]` in rlhf.toml). One entry each; the configuration's checks, `rlhf rewards check`, the
policy updates' scores (`rlhf_core.rewards`), best-of-N "by functions" and the docs read this table.

An entry names its code by reference ("package.module:function"), so reading the table imports nothing:

- `build(entry) -> fn`: `entry` is one `[[reward.functions]]` table (`config.RewardFunctionConfig`), already
  checked; `fn(prompts, completions, **columns) -> list[float | None]` has TRL's reward-function signature
  (conversational: `completions[i]` is `[{"role": "assistant", "content": text}]`), None where it does not apply;
- `check(entry) -> None` raises ValueError with the reason (a regex that does not compile, a bad schema) when the
  configuration is read;
- `keys` are the entry keys it reads besides `kind`, `weight` and `name`; `required` those it cannot do without;
  `columns(entry)` the prompt columns it needs (`column`), checked against the stored prompts before a round.

An entry written as `function = "module:function"` instead of `kind` is any callable with TRL's signature (TRL's
own `trl.rewards.accuracy_reward` works unchanged); its required parameters besides TRL's are prompt columns.
"""

from __future__ import annotations

from dataclasses import dataclass

from rlhf_core.registry.base import Registry

# Keyword arguments TRL's GRPOTrainer passes a reward function besides the dataset's columns: they are never
# prompt columns (a prompt file's column may not take these names).
TRL_REWARD_ARGUMENTS = ("prompts", "completions", "completion_ids", "trainer_state", "log_extra", "log_metric")
# The learned reward model's component in logs and tables (a function may not take the name).
REWARD_MODEL_COMPONENT = "reward_model"


@dataclass(frozen=True)
class RewardFunctionKind:
    name: str
    help: str  # one line, for the docs and `rlhf rewards check`
    build: str  # "module:function" (see the module docstring)
    keys: tuple[str, ...] = ()
    required: tuple[str, ...] = ()
    check: str | None = None  # "module:function"
    column_key: str | None = None  # the entry key naming the prompt column it reads, if any


REWARD_FUNCTION_KINDS: Registry[RewardFunctionKind] = Registry("reward-function kind", [
    RewardFunctionKind(
        "format_regex", "1 when the response matches `pattern` (Python regex, searched anywhere; anchor it with ^ "
                        "and $ to match the whole response), else 0",
        "rlhf_core.rewards.kinds:format_regex", keys=("pattern",), required=("pattern",),
        check="rlhf_core.rewards.kinds:check_format_regex"),
    RewardFunctionKind(
        "length_window", "1 when the response has between `min_tokens` and `max_tokens` tokens (whitespace-separated "
                         "words), falling linearly to 0 at half and twice the window",
        "rlhf_core.rewards.kinds:length_window", keys=("min_tokens", "max_tokens"), required=("max_tokens",),
        check="rlhf_core.rewards.kinds:check_length_window"),
    RewardFunctionKind(
        "answer_match", "1 when the response's final answer equals the prompt's `column` (numeric, string, or math "
                        "through math-verify; `compare`), else 0; None for prompts without it",
        "rlhf_core.rewards.kinds:answer_match", keys=("column", "compare"), required=("column",),
        check="rlhf_core.rewards.kinds:check_answer_match", column_key="column"),
    RewardFunctionKind(
        "json_valid", "1 when the response (or its fenced ```json block) is valid JSON, and valid against `schema` "
                      "when one is given (a JSON Schema as a TOML table), else 0",
        "rlhf_core.rewards.kinds:json_valid", keys=("schema",), check="rlhf_core.rewards.kinds:check_json_valid"),
    RewardFunctionKind(
        "python_tests", "the share of the prompt's `column` tests (a test script, or a list of them) that pass "
                        "against the response's code, run in a sandbox (a subprocess with CPU, memory, process and "
                        "time limits, no network, writes only in its temporary directory); None without tests",
        "rlhf_core.rewards.python_tests:python_tests", keys=("column", "timeout_seconds", "memory_mb"),
        required=("column",), check="rlhf_core.rewards.python_tests:check_python_tests", column_key="column"),
])
