"""The `python_tests` kind: the share of a prompt's tests that pass against the code in the response, each response
run in the sandbox (`sandbox`), never in the calling process. The response's code is its last fenced Python block
(```python or ```), else the whole response; the prompt's `column` holds one test script (a string: 1 or 0) or a
list of them (the share that pass); a prompt without tests gets None."""

from __future__ import annotations

import re
from typing import Any

from rlhf_core.config import RewardFunctionConfig
from rlhf_core.rewards.answers import completion_text
from rlhf_core.rewards.kinds import RewardFn
from rlhf_core.rewards.sandbox import Limits, run_tests

_FENCED = re.compile(r"```(?:python|py|python3)?[ \t]*\n(.*?)```", re.DOTALL | re.IGNORECASE)
MAX_TIMEOUT_SECONDS = 600


def response_code(text: str) -> str:
    """The code of a response: its last fenced block (```python, ```py or ```), else the whole text."""
    blocks = _FENCED.findall(text)
    return blocks[-1] if blocks else text


def test_list(value: Any) -> list[str] | None:
    """A prompt's tests as a list of scripts; None when there are none (the function does not apply)."""
    if isinstance(value, str):
        return [value] if value.strip() else None
    if isinstance(value, list) and value and all(isinstance(t, str) for t in value):
        return list(value)
    return None


def check_python_tests(entry: RewardFunctionConfig) -> None:
    if not 0 < entry.timeout_seconds <= MAX_TIMEOUT_SECONDS:
        raise ValueError(f"timeout_seconds must be above 0 and at most {MAX_TIMEOUT_SECONDS}")
    if entry.memory_mb < 64:
        raise ValueError("memory_mb must be at least 64 (the interpreter alone needs about 30)")


def python_tests(entry: RewardFunctionConfig) -> RewardFn:
    column = entry.column
    limits = Limits(timeout_seconds=entry.timeout_seconds, memory_mb=entry.memory_mb)

    def python_tests(prompts: list[Any], completions: list[Any], **columns: Any) -> list[float | None]:
        scores: list[float | None] = []
        for completion, value in zip(completions, columns.get(column) or [None] * len(completions), strict=True):
            tests = test_list(value)
            if tests is None:
                scores.append(None)
                continue
            scores.append(run_tests(response_code(completion_text(completion)), tests, limits).score(len(tests)))
        return scores

    return python_tests
