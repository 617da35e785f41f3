"""A simulated AI judge behind a real OpenAI-compatible HTTP server on loopback (`POST /v1/chat/completions`, FastAPI
under uvicorn in a thread), for the benchmarks and the tests: it reads the pair out of the judge's request
(`rlhf_core.judges.prompting.split_judge_prompt`) and answers from a gold preference with a given accuracy (each
answer names the gold's side with this probability, independently in the two orders, so that an error often shows as
the orders disagreeing) and left bias (each answer is "A", the response shown first, with this probability, whatever
the pair says), or, on demand, misbehaves the ways real endpoints do: `slow`, `garbage` (an answer with no verdict),
`broken` (a body that is no JSON), `429` (rate limited, for the first `fail_first` requests or always), `500`."""

from __future__ import annotations

import asyncio
import hashlib
import random
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request  # noqa: TC002 - FastAPI reads the route's annotations at run time
from fastapi.responses import JSONResponse, PlainTextResponse

from rlhf_core.judges.prompting import split_judge_prompt

GoldScore = Callable[[list[dict[str, str]], str], float]
MODES = ("answer", "slow", "garbage", "broken", "429", "500")


@dataclass
class JudgeBehaviour:
    gold: GoldScore | None = None  # None: longer is better
    accuracy: float = 1.0  # per answer: the gold's side with this probability, else the other one
    left_bias: float = 0.0  # per request: "A" (shown first) with this probability, whatever the pair
    mode: str = "answer"
    fail_first: int = 0  # with mode 429/500/garbage: misbehave for this many requests, then answer (0: always)
    slow_seconds: float = 5.0
    seed: int = 0


@dataclass
class Seen:
    """What the endpoint received: requests, and each request's Authorization header (a test checks the key)."""

    requests: int = 0
    authorizations: list[str] = field(default_factory=list)


def _length(messages: list[dict[str, str]], text: str) -> float:
    return float(len(text))


def simulated_verdict(behaviour: JudgeBehaviour, user_text: str) -> str:
    """The answer ("A", "B" or "tie") the simulated judge gives to one request."""
    conversation, first, second = split_judge_prompt(user_text)
    gold = behaviour.gold or _length
    score_first, score_second = gold(conversation, first), gold(conversation, second)
    truth = (score_first > score_second) - (score_first < score_second)
    # Seeded by the request itself: the same request gets the same answer, each order its own draw.
    draw = random.Random(int(hashlib.sha256(f"{behaviour.seed}\0{user_text}".encode()).hexdigest()[:12], 16))
    if draw.random() < behaviour.left_bias:
        return "A"
    right = draw.random() < behaviour.accuracy
    if truth == 0:
        return "tie" if right else draw.choice("AB")
    return "A" if (truth > 0) == right else "B"


def build_app(behaviour: JudgeBehaviour, seen: Seen) -> Any:  # noqa: ANN401 - a FastAPI app
    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Any:  # noqa: ANN401
        seen.requests += 1
        seen.authorizations.append(request.headers.get("authorization", ""))
        misbehaving = behaviour.fail_first == 0 or seen.requests <= behaviour.fail_first
        body = await request.json()
        if behaviour.mode == "slow":
            await asyncio.sleep(behaviour.slow_seconds)
        elif misbehaving and behaviour.mode in ("429", "500"):
            return JSONResponse({"error": {"message": "simulated", "type": "simulated"}},
                                status_code=int(behaviour.mode), headers={"retry-after": "0"})
        elif misbehaving and behaviour.mode == "broken":
            return PlainTextResponse("<html>502 bad gateway</html>", status_code=200,
                                     headers={"content-type": "application/json"})
        user = next((m["content"] for m in reversed(body.get("messages", [])) if m.get("role") == "user"), "")
        if misbehaving and behaviour.mode == "garbage":
            content = "What a lovely pair of responses. I like turtles."
        else:
            content = f"Compared by the principles.\nVerdict: {simulated_verdict(behaviour, user)}"
        prompt_tokens = sum(len(str(m.get("content", "")).split()) for m in body.get("messages", []))
        completion_tokens = len(content.split())
        return {"id": f"chatcmpl-sim-{seen.requests}", "object": "chat.completion", "created": int(time.time()),
                "model": body.get("model", "simulated"),
                "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                             "finish_reason": "stop"}],
                "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                          "total_tokens": prompt_tokens + completion_tokens}}

    return app


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class SimulatedJudgeEndpoint:
    """The server, started in a thread on 127.0.0.1 (`with SimulatedJudgeEndpoint(behaviour) as endpoint:`);
    `base_url` is what `rlhf judge add --base-url` takes."""

    def __init__(self, behaviour: JudgeBehaviour | None = None) -> None:
        self.behaviour = behaviour or JudgeBehaviour()
        self.seen = Seen()
        self.port = free_port()
        self._server: Any = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> SimulatedJudgeEndpoint:
        import uvicorn

        config = uvicorn.Config(build_app(self.behaviour, self.seen), host="127.0.0.1", port=self.port,
                                log_level="warning", access_log=False)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        deadline = time.time() + 20
        while not self._server.started:
            if time.time() > deadline or not self._thread.is_alive():
                raise RuntimeError(f"the simulated judge endpoint did not start on port {self.port}")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
            self._thread.join(timeout=10)

    def __enter__(self) -> SimulatedJudgeEndpoint:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
