"""A response's final answer and whether it equals a known one (the `answer_match` kind): numbers within a
relative 1e-6, strings with case, spacing and surrounding punctuation ignored, math through math-verify.

The final answer is the last `\\boxed{...}`, else what follows the last "answer is" / "answer:" / "####", else the
last non-empty line. A number is the last number of the final answer (else of the whole response), so "3 x 4 = 12"
answers 12; "1,234", "-7", "2.50", "3/4" and "1e3" are numbers.
"""

from __future__ import annotations

import logging
import math
import re
import threading
from typing import Any

_BOXED = re.compile(r"\\boxed\s*\{((?:[^{}]|\{[^{}]*\})*)\}")
_ANSWER_AFTER = re.compile(r"(?:answer\s*(?:is|:|=)|####)\s*(.+)", re.IGNORECASE)
_NUMBER = re.compile(r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:/\d+)?(?:[eE][-+]?\d+)?|[-+]?\.\d+")
_EDGES = " \t\r\n.,;:!?\"'`*_()[]{}<>$"


def completion_text(completion: Any) -> str:
    """The text of one completion as TRL passes it: a string, or a conversation whose last message is the answer."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, dict):
        return str(completion.get("content", ""))
    if isinstance(completion, list) and completion:
        return completion_text(completion[-1])
    return ""


def final_answer(text: str) -> str:
    """The part of a response that states its answer (see the module docstring)."""
    boxed = _BOXED.findall(text)
    if boxed:
        return boxed[-1].strip()
    after = _ANSWER_AFTER.findall(text)
    if after:
        return after[-1].strip()
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1].strip() if lines else ""


def parse_number(text: str) -> float | None:
    """The number `text` is ("1,234" -> 1234.0, "3/4" -> 0.75, "−2" -> -2.0), or None when it is not one."""
    cleaned = text.strip().strip(_EDGES.replace("-", "").replace("+", "")).replace("\u2212", "-")
    match = _NUMBER.fullmatch(cleaned)
    return _number_value(match.group(0)) if match else None


def _number_value(token: str) -> float | None:
    token = token.replace(",", "")
    try:
        if "/" in token:
            top, bottom = token.split("/")
            return float(top) / float(bottom) if float(bottom) else None
        return float(token)
    except ValueError:
        return None


def last_number(text: str) -> float | None:
    """The last number in `text`, or None."""
    found = _NUMBER.findall(text.replace("\u2212", "-"))
    return _number_value(found[-1]) if found else None


def normalize(text: str) -> str:
    """Case folded, inner whitespace collapsed, surrounding punctuation, quotes and Markdown emphasis dropped."""
    return " ".join(text.casefold().split()).strip(_EDGES)


def numbers_equal(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9)


def match_numeric(response: str, gold: Any) -> float | None:
    target = float(gold) if isinstance(gold, int | float) and not isinstance(gold, bool) else parse_number(str(gold))
    if target is None:
        return None  # the known answer is not a number: the check does not apply
    found = last_number(final_answer(response))
    if found is None:
        found = last_number(response)
    return float(found is not None and numbers_equal(found, target))


def match_string(response: str, gold: Any) -> float:
    target = normalize(str(gold))
    return float(bool(target) and target in (normalize(final_answer(response)), normalize(response)))


def match_math(response: str, gold: Any) -> float | None:
    """math-verify's verdict (LaTeX and plain expressions); None when the known answer does not parse."""
    from math_verify import parse, verify

    # math-verify times out with signal.alarm, which works only in the main thread (as TRL's accuracy_reward does).
    main = threading.current_thread() is threading.main_thread()
    if not main:
        logging.getLogger("math_verify").setLevel(logging.ERROR)
    timeout = 5 if main else None
    gold_parsed = parse(str(gold), parsing_timeout=timeout)
    if not gold_parsed:
        return None
    answer = parse(response, parsing_timeout=timeout)
    return float(bool(answer) and verify(gold_parsed, answer, timeout_seconds=timeout))


def is_number(gold: Any) -> bool:
    if isinstance(gold, bool):
        return False
    return isinstance(gold, int | float) or parse_number(str(gold)) is not None


def answer_score(response: str, gold: Any, compare: str) -> float | None:
    """1.0 when `response` answers `gold` (a list: any of them), 0.0 when not, None when `gold` is missing or (math,
    numeric) does not parse. `compare`: "numeric", "string", "math" or "auto" (numeric for a number, else string)."""
    if gold is None or gold == "" or gold == []:
        return None
    if isinstance(gold, list):
        scores = [s for g in gold if (s := answer_score(response, g, compare)) is not None]
        return max(scores) if scores else None
    how = ("numeric" if is_number(gold) else "string") if compare == "auto" else compare
    if how == "numeric":
        return match_numeric(response, gold)
    if how == "math":
        return match_math(response, gold)
    return match_string(response, gold)
