"""The `openai` judge kind: any OpenAI-compatible chat endpoint (vLLM's server, llama.cpp's, Ollama, a hosted API)
through the official `openai` client. Each request is the rubric and the pair in one order; the answer is parsed to
A, B or tie (`prompting`).

Requests are spaced to `judges.requests_per_second`, each with `judges.timeout_seconds`; a failure (connection
refused, timeout, 429, 5xx, an answer without a verdict) is retried `judges.retries` times after `backoff_seconds`,
doubling (a 429's Retry-After wins when longer); a 4xx other than 429 (a wrong model name, a refused key) is not
retried. Then the judge is unavailable: one line naming it, and the run stores nothing. A run's requests, retries
included, stop at its cap. The key comes from the environment variable the judge names, at run time only.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from rlhf_core.config import JudgesConfig
from rlhf_core.judges.prompting import MAX_RATIONALE_CHARS, AnswerError, judge_messages, parse_answer
from rlhf_core.judges.settings import JudgeConfigError, api_key, check_env_name, display_url
from rlhf_core.judges.verdicts import (
    JudgeUnavailable,
    OrderAnswer,
    RequestCapReached,
    Shown,
    Usage,
    answer_from_choice,
)

NO_KEY = "no-key"  # local servers want none; the client wants a string


def check_openai_settings(settings: dict[str, Any]) -> None:
    url = urlsplit(str(settings["base_url"]))
    if url.scheme not in ("http", "https") or not url.hostname:
        raise JudgeConfigError("--base-url must be an http:// or https:// URL of an OpenAI-compatible API, such as "
                               "http://127.0.0.1:8000/v1")
    if url.username or url.password:
        raise JudgeConfigError("--base-url must not hold a user or password; put the key in an environment variable "
                               "and name it with --api-key-env")
    if not str(settings["model"]).strip():
        raise JudgeConfigError("--model must name the endpoint's model")
    if settings.get("api_key_env") is not None:
        check_env_name(str(settings["api_key_env"]))


class OpenAIJudge:
    def __init__(self, name: str, settings: dict[str, Any], rubric: str | None, cfg: JudgesConfig,
                 max_requests: int) -> None:
        import openai

        self.name, self.rubric, self.cfg, self.max_requests = name, rubric, cfg, max_requests
        self.model, self.where = settings["model"], display_url(settings["base_url"])
        self.usage = Usage()
        self._errors = openai
        self._client = openai.OpenAI(base_url=settings["base_url"], api_key=api_key(name, settings) or NO_KEY,
                                     timeout=cfg.timeout_seconds, max_retries=0)
        self._next_at = 0.0

    def judge(self, items: Sequence[Shown]) -> list[OrderAnswer]:
        answers: list[OrderAnswer] = []
        for item in items:
            try:
                answers.append(self._ask(item))
            except RequestCapReached:
                raise RequestCapReached(answers) from None
        return answers

    def close(self) -> None:
        self._client.close()

    def _wait_turn(self) -> None:
        now = time.monotonic()
        if now < self._next_at:
            time.sleep(self._next_at - now)
        self._next_at = max(now, self._next_at) + 1.0 / self.cfg.requests_per_second

    def _ask(self, item: Shown) -> OrderAnswer:
        errors = self._errors
        messages = judge_messages(self.rubric, item.prompt_messages, item.first, item.second)
        problem = ""
        for attempt in range(self.cfg.retries + 1):
            if self.usage.requests >= self.max_requests:
                raise RequestCapReached([])
            self._wait_turn()
            self.usage.requests += 1
            wait = self.cfg.backoff_seconds * 2 ** attempt
            try:
                response = self._client.chat.completions.create(model=self.model, messages=messages, temperature=0.0,
                                                                max_tokens=self.cfg.max_tokens)
                usage = getattr(response, "usage", None)
                self.usage.prompt_tokens += int(getattr(usage, "prompt_tokens", 0) or 0)
                self.usage.completion_tokens += int(getattr(usage, "completion_tokens", 0) or 0)
                text = response.choices[0].message.content if response.choices else None
                parsed = parse_answer(text)
                return answer_from_choice(parsed.answer, parsed.confidence, (text or "")[:MAX_RATIONALE_CHARS])
            except errors.RateLimitError as exc:
                problem = "answered 429 (rate limited)"
                wait = max(wait, _retry_after(exc))
            except errors.APITimeoutError:
                problem = f"did not answer within {self.cfg.timeout_seconds:g} s"
            except errors.APIConnectionError:
                problem = "could not be reached (connection refused or dropped)"
            except errors.APIStatusError as exc:
                if exc.status_code < 500:
                    raise JudgeUnavailable(f"judge {self.name!r}: {self.where} refused the request with HTTP "
                                           f"{exc.status_code} (check --model and the API key's variable)") from None
                problem = f"answered HTTP {exc.status_code}"
            except (AnswerError, errors.APIError, ValueError, AttributeError, IndexError, TypeError) as exc:
                problem = f"answered garbage ({str(exc)[:120]})"
            if attempt < self.cfg.retries:
                time.sleep(wait)
        raise JudgeUnavailable(f"judge {self.name!r}: {self.where} {problem}, {self.cfg.retries + 1} tries; "
                               "nothing was stored")


def _retry_after(exc: Any) -> float:  # noqa: ANN401 - an openai.RateLimitError
    try:
        return min(60.0, float(exc.response.headers.get("retry-after", 0)))
    except (AttributeError, TypeError, ValueError):
        return 0.0


def build_openai_judge(name: str, settings: dict[str, Any], rubric: str | None, cfg: JudgesConfig, *,
                       max_requests: int, cache_dir: Path | None = None) -> OpenAIJudge:
    return OpenAIJudge(name, settings, rubric, cfg, max_requests)
