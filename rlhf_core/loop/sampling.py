"""Sampling response pairs from the current policy, in the foreground (`rlhf sample`) or in the
background to keep the labeling pool topped up."""

from __future__ import annotations

import ctypes
import logging
import math
import random
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import NamedTuple

from tqdm.auto import tqdm

from rlhf_core.loop.pair_selection import candidate_pairs, distinct_responses, response_member_scores, select_pairs
from rlhf_core.models.batching import prompt_token_ids
from rlhf_core.models.generation import SamplingParams
from rlhf_core.models.stack import ModelStack
from rlhf_core.training.workspace_stack import activate_policy, activate_reward_model, load_stack
from rlhf_core.workspace import Workspace
from storage import Database, get_policy, open_pair_count, prompt_messages, prompts_needing_pairs, record_generations

log = logging.getLogger(__name__)


class SamplerStopped(BaseException):
    """Raised inside a running top-up to end it (`PoolTopper.stop`). A BaseException, so that no
    `except Exception` on the way swallows it; each prompt's pairs are one transaction, so the
    prompt being written rolls back and only whole prompts remain."""


@dataclass
class SampleResult:
    policy_version: int
    prompts: int = 0
    samples: int = 0
    pairs: int = 0
    identical_skipped: int = 0
    empty_skipped: int = 0
    pair_ids: list[int] = field(default_factory=list)


class GeneratedResponse(NamedTuple):
    """One sampled response as `record_generations` stores it."""

    text: str
    token_count: int  # new tokens, eos included
    finish_reason: str  # "eos" or "length"


def generate_responses(stack: ModelStack, conversations: list[list[dict[str, str]]], *, max_new_tokens: int,
                       temperature: float, top_p: float, adapter: str | None = "policy",
                       batch_size: int = 32, progress: str | None = None) -> list[GeneratedResponse]:
    """One sampled response per conversation: `(text, token count, finish reason)`, in input order.

    The finish reason is "eos" when the response's last token is eos (the model ended its turn),
    else "length" (cut at `max_new_tokens`); the page marks cut responses and the operator page
    counts them. `adapter` None samples the bare base model (version 0). `progress`: a tqdm bar
    with this label.
    """
    tok = stack.tokenizer
    prompts = [prompt_token_ids(tok, c) for c in conversations]
    params = SamplingParams(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p)
    with tqdm(total=len(prompts), desc=progress, unit="response", disable=progress is None) as bar:
        responses = stack.sample(prompts, params, adapter=adapter, batch_size=batch_size, on_batch=bar.update)
    return [GeneratedResponse(tok.decode(r, skip_special_tokens=True).strip(), len(r),
                              "eos" if r and r[-1] == tok.eos_token_id else "length") for r in responses]


def sample_pairs(
    ws: Workspace, db: Database, stack: ModelStack, *, n_pairs: int | None = None, per_prompt: int | None = None,
    split: str = "train", progress: bool = True, on_progress: Callable[[float, str], None] | None = None,
) -> SampleResult:
    """Sample `per_prompt` responses for prompts that need pairs, until `n_pairs` pairs exist (or prompts run out)."""
    cfg = ws.config.sampling
    per_prompt = per_prompt or cfg.per_prompt
    if per_prompt < 2:
        raise ValueError("per_prompt must be at least 2 to form pairs")
    n_pairs = n_pairs or cfg.pool_refill_pairs
    version_id = activate_policy(stack, db)
    version = get_policy(db, version_id)
    method = cfg.pair_selection
    # Uncertainty needs the reward model's opinion of every response; without one it is random.
    scored = method == "uncertainty" and activate_reward_model(stack, db) is not None
    candidates = per_prompt * (per_prompt - 1) // 2
    per_prompt_pairs = candidates if method == "all" or cfg.max_pairs_per_prompt <= 0 else min(
        cfg.max_pairs_per_prompt, candidates)
    prompts = prompts_needing_pairs(db, limit=math.ceil(n_pairs / per_prompt_pairs) * 2, split=split,
                                    policy_version_id=version_id)
    result = SampleResult(policy_version=version_id)
    if not prompts:
        return result
    gen_params = {"temperature": cfg.temperature, "top_p": cfg.top_p, "max_new_tokens": cfg.max_new_tokens,
                  "per_prompt": per_prompt, "policy_version": version_id, "pair_selection": method}
    prompts_per_batch = max(1, cfg.batch_size // per_prompt)
    bar = tqdm(total=n_pairs, desc=f"sampling pairs (policy v{version_id})", unit="pair", disable=not progress)
    start = 0
    while start < len(prompts) and result.pairs < n_pairs:
        # No more prompts than the missing pairs need (a duplicate response costs a pair; the next batch makes up).
        wanted = math.ceil((n_pairs - result.pairs) / per_prompt_pairs)
        batch = prompts[start:start + min(prompts_per_batch, wanted)]
        start += len(batch)
        conversations = [prompt_messages(p) for p in batch for _ in range(per_prompt)]
        responses = generate_responses(stack, conversations, max_new_tokens=cfg.max_new_tokens,
                                       temperature=cfg.temperature, top_p=cfg.top_p, batch_size=cfg.batch_size)
        scores = response_member_scores(stack, conversations, [r[0] for r in responses],
                                        max_length=ws.config.reward.max_length) if scored else None
        for i, prompt in enumerate(batch):
            mine = responses[i * per_prompt:(i + 1) * per_prompt]
            keep, identical, empty = distinct_responses([r[0] for r in mine])
            chosen = select_pairs(candidate_pairs(keep), method, cfg.max_pairs_per_prompt,
                                  random.Random(f"{version_id}-{prompt.id}"),
                                  None if scores is None else scores[i * per_prompt:(i + 1) * per_prompt])
            rows = record_generations(
                db, prompt_id=prompt.id, policy_version_id=version_id, responses=mine, gen_params=gen_params,
                pairs=chosen.pairs, round=version.round, judgments_wanted=ws.config.labeling.judgments_per_pair,
                info_scores=chosen.info_scores, selection=chosen.selection,
            )
            result.prompts += 1
            result.samples += len(mine)
            result.pairs += len(rows)
            result.pair_ids += [r.id for r in rows]
            result.identical_skipped += identical
            result.empty_skipped += empty
            bar.update(len(rows))
        if on_progress:
            on_progress(min(1.0, result.pairs / n_pairs), f"{result.pairs}/{n_pairs} pairs")
    bar.close()
    return result


@dataclass(frozen=True)
class SamplingProgress:
    """A running top-up as the labeling page shows it: `ready` of `wanted` pairs written so far;
    `loading` while the model is still being loaded (or converted, the first time)."""

    ready: int
    wanted: int
    loading: bool = False


class PoolTopper:
    """Keeps at least `pool_min_open_pairs` unjudged pairs by sampling in a background thread.

    Requests never wait on the model: `request_top_up` returns at once and at most one sampling
    thread runs. The model is loaded on first use and kept for later top-ups; `model()` lends it to
    others in the serving process (the operator page's "Try it"), one user at a time.
    """

    def __init__(self, ws: Workspace, db: Database,
                 stack_factory: Callable[[Workspace], ModelStack] = load_stack) -> None:
        self.ws, self.db = ws, db
        self._stack_factory = stack_factory
        self._stack: ModelStack | None = None
        self._lock = threading.Lock()
        self._model_lock = threading.Lock()  # one user of the stack at a time: a top-up or a `model()` borrower
        self._thread: threading.Thread | None = None
        self.last_error: str | None = None
        self.last_result: SampleResult | None = None
        self._progress: SamplingProgress | None = None

    @property
    def busy(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def request_top_up(self) -> bool:
        """Start sampling if the pool is low and nothing is sampling yet; True when a run started."""
        if open_pair_count(self.db) >= self.ws.config.sampling.pool_min_open_pairs:
            return False
        return self.request_pairs(self.ws.config.sampling.pool_refill_pairs)

    def request_pairs(self, n: int) -> bool:
        with self._lock:
            if self.busy:
                return False
            self._thread = threading.Thread(target=self._run, args=(n,), name="pool-topper", daemon=True)
            self._thread.start()
            return True

    @contextmanager
    def model(self) -> Iterator[ModelStack]:
        """The sampler's model stack (loaded on first use), held for the caller until the block ends; a
        top-up waits meanwhile, and the caller waits for a running top-up's current pass."""
        with self._model_lock:
            if self._stack is None:
                self._stack = self._stack_factory(self.ws)
            yield self._stack

    def progress(self) -> SamplingProgress | None:
        """The running top-up's progress, or None when nothing samples (no database, no lock)."""
        return self._progress if self.busy else None

    def wait(self, timeout: float | None = None) -> None:
        thread = self._thread
        if thread is not None:
            thread.join(timeout)

    def stop(self, timeout_s: float = 15.0) -> bool:
        """End a running top-up (from another thread, e.g. on SIGTERM) and wait for it; True once no
        top-up runs. The stop lands between two Python steps of sampling, within a token step."""
        thread = self._thread
        if thread is None or not thread.is_alive():
            return True
        ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread.ident), ctypes.py_object(SamplerStopped))
        thread.join(timeout_s)
        return not thread.is_alive()

    def _run(self, n: int) -> None:
        with self._model_lock:
            self._top_up(n)

    def _top_up(self, n: int) -> None:
        self._progress = SamplingProgress(ready=0, wanted=n, loading=self._stack is None)
        try:
            if self._stack is None:
                self._stack = self._stack_factory(self.ws)
            self._progress = SamplingProgress(ready=0, wanted=n)
            first = self.ws.config.sampling.first_batch_pairs
            result = SampleResult(policy_version=0)
            if 0 < first < n and open_pair_count(self.db) == 0:
                result = self._sample(self._one_prompt_batches(), first, n, 0)
            if result.pairs < n:
                rest = self._sample(self.ws, n - result.pairs, n, result.pairs)
                rest.pairs += result.pairs
                rest.pair_ids = result.pair_ids + rest.pair_ids
                result = rest
            self.last_result = result
            self.last_error = None
            log.info("pool top-up: %d new pairs from policy v%d", result.pairs, result.policy_version)
        except SamplerStopped:
            log.info("pool top-up stopped; the pairs of whole prompts written so far are kept")
        except Exception as exc:  # noqa: BLE001 - a background thread must report, not die silently
            self.last_error = f"{type(exc).__name__}: {exc}"
            log.exception("pool top-up failed")
        finally:
            self._progress = None

    def _one_prompt_batches(self) -> Workspace:
        """This workspace with generation batches of one prompt's responses: the first pairs sooner."""
        sampling = replace(self.ws.config.sampling, batch_size=self.ws.config.sampling.per_prompt)
        return replace(self.ws, config=replace(self.ws.config, sampling=sampling))

    def _sample(self, ws: Workspace, n_pairs: int, wanted: int, before: int) -> SampleResult:
        def on_progress(fraction: float, _text: str) -> None:
            self._progress = SamplingProgress(ready=min(wanted, before + round(fraction * n_pairs)), wanted=wanted)

        return sample_pairs(ws, self.db, self._stack, n_pairs=n_pairs, progress=False, on_progress=on_progress)
