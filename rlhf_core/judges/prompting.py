"""What a judge reads and what it answers: the rubric (a constitution: `rubric.md`, the seeds' principles, unless a
judge has its own), the pair shown in one order as chat messages, and the answer parsed to first, second or tie.
The simulated endpoint (`rlhf_core.simulator.judge_endpoint`) reads the same text back (`split_judge_prompt`)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

DEFAULT_RUBRIC = (Path(__file__).with_name("rubric.md")).read_text(encoding="utf-8").strip()
CONVERSATION, FIRST, SECOND = "[Conversation]", "[Response A]", "[Response B]"
INSTRUCTION = ("Which response is better by the principles above? Explain briefly, then end with one line: "
               "\"Verdict: A\", \"Verdict: B\" or \"Verdict: tie\".")
VERDICT_PREFIX = "Verdict:"  # a local LM's answer is read right after this
MAX_RATIONALE_CHARS = 2000
_VERDICT = re.compile(r"verdict\W{0,4}(a|b|tie)\b", re.IGNORECASE)
_BARE = re.compile(r"^\W*(a|b|tie)\W*$", re.IGNORECASE)
_CONFIDENCE = re.compile(r"confidence\W{0,4}(\d+(?:\.\d+)?)\s*(%?)", re.IGNORECASE)


class AnswerError(ValueError):
    """A judge's answer names no verdict (A, B or tie)."""


@dataclass(frozen=True)
class ParsedAnswer:
    answer: str  # "first", "second" or "tie"
    confidence: float  # 0 (a coin flip) to 1; 1 unless the answer states one


def render_conversation(messages: list[dict[str, str]]) -> str:
    return "\n\n".join(f"{m.get('role', 'user').capitalize()}: {m.get('content', '')}" for m in messages)


def pair_text(messages: list[dict[str, str]], first: str, second: str) -> str:
    """The user turn of a judge request: the conversation and the two responses, `first` shown as A."""
    return (f"{CONVERSATION}\n{render_conversation(messages)}\n\n{FIRST}\n{first}\n\n{SECOND}\n{second}\n\n"
            f"{INSTRUCTION}")


def judge_messages(rubric: str | None, messages: list[dict[str, str]], first: str, second: str
                   ) -> list[dict[str, str]]:
    """The chat a judge answers: the rubric as the system turn, the pair (in this order) as the user turn."""
    return [{"role": "system", "content": rubric or DEFAULT_RUBRIC},
            {"role": "user", "content": pair_text(messages, first, second)}]


def parse_answer(text: str | None) -> ParsedAnswer:
    """The verdict of an answer: its last "Verdict: A|B|tie" line (or an answer that is just A, B or tie), and a
    "Confidence: 80%" (or 0.8) when it states one. AnswerError for anything else."""
    text = (text or "").strip()
    found = _VERDICT.findall(text) or _BARE.findall(text)
    if not found:
        shown = " ".join(text.split())[:80]
        raise AnswerError(f"the answer names no verdict (A, B or tie): {shown!r}")
    answer = {"a": "first", "b": "second", "tie": "tie"}[found[-1].lower()]
    confidence = 1.0
    if (stated := _CONFIDENCE.findall(text)):
        value, percent = stated[-1]
        confidence = float(value) / (100.0 if percent or float(value) > 1.0 else 1.0)
    return ParsedAnswer(answer, min(1.0, max(0.0, confidence)))


def split_judge_prompt(text: str) -> tuple[list[dict[str, str]], str, str]:
    """The conversation (as one user message) and the two responses of a judge request's user turn, first as shown
    (the inverse of `pair_text`, for the simulated endpoint). ValueError if it is not one."""
    try:
        head, rest = text.split(f"{CONVERSATION}\n", 1)[1].split(f"\n\n{FIRST}\n", 1)
        first, rest = rest.split(f"\n\n{SECOND}\n", 1)
        second = rest.rsplit(f"\n\n{INSTRUCTION}", 1)[0]
    except (IndexError, ValueError):
        raise ValueError("not a judge request: no [Conversation], [Response A] and [Response B] sections") from None
    content = head.split(": ", 1)[1] if ": " in head else head
    return [{"role": "user", "content": content}], first, second
