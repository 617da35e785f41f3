"""Trying versions by hand: what does policy version N answer to my prompt, beside version M?

`try_versions` is what `rlhf generate` and the operator page's "Try it" panel call. It decodes with the
loop's own sampler (`ModelStack.sample`), so a version's greedy answer here is the one its exported
model gives (`rlhf export-model`; tested). The stack it uses is left holding the current policy.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from rlhf_core.data.prompt_files import parse_conversation
from rlhf_core.workspace import Workspace
from storage import Database, PolicyVersion, current_policy, get_policy, list_policies

if TYPE_CHECKING:  # the model libraries load only when a version is tried: a refused request prints one line
    from rlhf_core.models.stack import ModelStack

MAX_TRY_TOKENS = 1024


class VersionChoiceError(ValueError):
    """A version to try that does not exist, or a request out of bounds; the message says which."""


@dataclass(frozen=True)
class TriedResponse:
    """One version's response to one prompt."""

    version: int
    text: str
    token_ids: list[int]
    finish_reason: str  # "eos" (the model ended its turn) or "length" (cut at max_new_tokens)

    @property
    def tokens(self) -> int:
        return len(self.token_ids)


def version_label(version: PolicyVersion) -> str:
    """"v3 · grpo · round 3", "v0 · base"."""
    if version.id == 0 or not version.adapter_path:
        return f"v{version.id} · base"
    return f"v{version.id} · {version.algorithm} · round {version.round}"


def version_choices(db: Database) -> list[tuple[str, int]]:
    """(label, id) of every policy version, newest first (for pickers)."""
    return [(version_label(v), v.id) for v in reversed(list_policies(db))]


def resolve_versions(db: Database, versions: Sequence[int | None]) -> list[PolicyVersion]:
    """The named versions (None: the current one); VersionChoiceError naming any that does not exist."""
    out = []
    for number in versions:
        found = current_policy(db) if number is None else get_policy(db, number)
        if found is None:
            known = ", ".join(f"v{v.id}" for v in list_policies(db))
            raise VersionChoiceError(f"policy version {number} does not exist (versions: {known})")
        out.append(found)
    return out


def prompt_conversation(text: str, max_chars: int) -> list[dict[str, str]]:
    """A typed prompt as a one-turn conversation, checked like an imported prompt."""
    try:
        return parse_conversation({"prompt": text}, "the prompt", max_chars=max_chars)
    except ValueError as exc:
        raise VersionChoiceError(str(exc)) from None


def try_versions(stack: ModelStack, db: Database, conversations: list[list[dict[str, str]]],
                 versions: Sequence[int | None], *, greedy: bool, max_new_tokens: int, temperature: float = 1.0,
                 top_p: float = 1.0, seed: int = 0) -> list[list[TriedResponse]]:
    """Per version (in the order given), one response per conversation. Sampled responses are seeded
    (`seed`, the same for every version); `greedy` takes the most likely token at each step."""
    import torch

    from rlhf_core.models.batching import prompt_token_ids
    from rlhf_core.models.generation import SamplingParams
    from rlhf_core.training.workspace_stack import activate_policy

    if not 1 <= max_new_tokens <= MAX_TRY_TOKENS:
        raise VersionChoiceError(f"max new tokens must be between 1 and {MAX_TRY_TOKENS}, not {max_new_tokens}")
    chosen = resolve_versions(db, versions)
    params = SamplingParams(max_new_tokens=max_new_tokens, temperature=0.0 if greedy else temperature, top_p=top_p)
    prompts = [prompt_token_ids(stack.tokenizer, c) for c in conversations]
    eos = stack.tokenizer.eos_token_id
    results = []
    try:
        for version in chosen:
            activate_policy(stack, db, version.id)
            generator = torch.Generator(device=stack.device).manual_seed(seed)
            adapter = "policy" if version.adapter_path else None
            outputs = stack.sample(prompts, params, adapter=adapter, generator=generator)
            results.append([
                TriedResponse(version=version.id, text=stack.tokenizer.decode(ids, skip_special_tokens=True).strip(),
                              token_ids=list(ids), finish_reason="eos" if ids and ids[-1] == eos else "length")
                for ids in outputs
            ])
    finally:
        activate_policy(stack, db)
    return results


class Playground:
    """"Try it" in the serving process: a typed prompt answered by chosen versions, on a model stack
    borrowed for the duration (`borrow`, e.g. the pool sampler's `PoolTopper.model`), so the page adds
    no second copy of the model and never decodes beside a top-up on the same weights."""

    def __init__(self, ws: Workspace, db: Database, borrow: Callable[[], AbstractContextManager[ModelStack]]) -> None:
        self.ws, self.db, self._borrow = ws, db, borrow

    def answer(self, prompt: str, versions: list[int], *, greedy: bool, max_new_tokens: int,
               seed: int = 0) -> list[TriedResponse]:
        """One response per version, in order; VersionChoiceError for a bad prompt or version."""
        conversation = prompt_conversation(prompt, self.ws.config.labeling.max_prompt_chars)
        resolve_versions(self.db, versions)  # refuse at once, before waiting for the model
        cfg = self.ws.config.sampling
        with self._borrow() as stack:
            per_version = try_versions(stack, self.db, [conversation], versions, greedy=greedy,
                                       max_new_tokens=max_new_tokens, temperature=cfg.temperature, top_p=cfg.top_p,
                                       seed=seed)
        return [rows[0] for rows in per_version]
