"""Best-of-N: sample N answers of a policy version to a prompt and keep the one a scorer ranks highest, by the reward
model, the process reward model or the reward functions (the scorers of `rlhf_core.registry.BEST_OF_N_SCORERS`).
`rlhf generate --best-of N --by NAME`, the operator console's best-of-N panel and bench/best_of_n.py call
`best_of_n`; the stack it uses is left holding the current policy.

The reward functions are one callable with TRL's reward-function signature, `functions(prompts, completions,
**columns) -> list[float | None]`, given the conversational form TRL gives them (prompts as chat messages, each
completion as `[{"role": "assistant", "content": text}]`) and the prompt's extra columns (e.g. `solution` for TRL's
`accuracy_reward`), one value per completion. `functions_from_references` sums named "module:function" ones
(`--function`); without them, the workspace's configured `[[reward.functions]]` score, weighted and summed as in
training (`configured_functions`: `score_with_functions` over the prompts' columns, then `combine_rewards`).
Candidates a scorer gives None rank last; among equal scores the first sampled wins.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rlhf_core.data.file_checks import InputFileError
from rlhf_core.data.prompt_files import PromptFileError, parse_conversation
from rlhf_core.data.records import parse_file
from rlhf_core.registry import BEST_OF_N_SCORERS, IMPORT_KINDS, UnknownKind, resolve
from rlhf_core.workspace import Workspace
from storage import Database, current_prm, current_reward_model

if TYPE_CHECKING:  # the model libraries load only when answers are generated: a refusal prints one line first
    from rlhf_core.models.stack import ModelStack

MAX_BEST_OF = 64
RewardFunction = Callable[..., list[float | None]]  # TRL's signature: (prompts, completions, **columns)


class BestOfNError(ValueError):
    """A best-of-N request that cannot run (an unknown scorer, what it needs missing, N out of bounds)."""


@dataclass
class ScoringContext:
    """What the scorers read: the workspace, its database, the model stack, and the reward functions (None: the
    workspace's configured `[[reward.functions]]`, if any)."""

    ws: Workspace
    db: Database
    stack: ModelStack
    functions: RewardFunction | None = None

    def __post_init__(self) -> None:
        if self.functions is None:
            self.functions = configured_functions(self.ws)


def configured_functions(ws: Workspace) -> RewardFunction | None:
    """The workspace's `[[reward.functions]]` as one TRL-signature callable, combined as a round combines them
    (`reward.combine` through `combine_rewards`; None where none applies to a completion); None when none is
    configured."""
    import torch

    from rlhf_core.algorithms.reward_combination import combine_rewards
    from rlhf_core.rewards import RewardFunctionError, build_reward_functions, score_with_functions
    from rlhf_core.rewards.answers import completion_text

    if not ws.config.reward.functions:
        return None
    functions = build_reward_functions(ws.config.reward.functions)

    def configured(prompts: list[Any], completions: list[Any], **columns: Any) -> list[float | None]:
        texts = [completion_text(c) for c in completions]
        rows = [{name: values[i] for name, values in columns.items()} for i in range(len(texts))]
        try:
            scores = score_with_functions(functions, prompts, texts, rows)
        except RewardFunctionError as exc:
            raise BestOfNError(str(exc)) from None
        components = torch.tensor([[float("nan") if v is None else v for v in scores.values[name]]
                                   for name in scores.names])
        totals = combine_rewards(components, torch.tensor(scores.weights), ws.config.reward.combine).tolist()
        return [None if all(scores.values[name][i] is None for name in scores.names) else totals[i]
                for i in range(len(texts))]

    return configured


@dataclass(frozen=True)
class Candidate:
    text: str
    tokens: int
    finish_reason: str  # "eos" or "length"
    score: float | None


@dataclass(frozen=True)
class BestOfN:
    """One prompt's N candidates in sampling order, their scores, and the index of the one kept."""

    version: int
    by: str
    candidates: list[Candidate]
    chosen: int

    @property
    def best(self) -> Candidate:
        return self.candidates[self.chosen]


def pick_best(scores: Sequence[float | None]) -> int:
    """The index of the highest score; None ranks below every number; the first of equal ones."""
    order = [(s is not None, s if s is not None else 0.0, -i) for i, s in enumerate(scores)]
    return -max(order)[2]


def functions_from_references(references: Sequence[str]) -> RewardFunction:
    """The sum of TRL-signature reward functions named "module:function"; a completion none applies to scores
    None. BestOfNError naming a reference that does not resolve to a callable."""
    functions = []
    for ref in references:
        try:
            fn = resolve(ref)
        except (ImportError, AttributeError, ValueError) as exc:
            raise BestOfNError(f"--function {ref}: cannot be loaded ({exc}); give module:function") from None
        if not callable(fn):
            raise BestOfNError(f"--function {ref}: is not a function")
        functions.append(fn)

    def summed(prompts: list[Any], completions: list[Any], **columns: Any) -> list[float | None]:
        per_function = [list(fn(prompts=prompts, completions=completions, **columns)) for fn in functions]
        return [None if all(v is None for v in values) else float(sum(v for v in values if v is not None))
                for values in zip(*per_function, strict=True)]

    return summed


def check_scorer(ctx: ScoringContext, by: str) -> None:
    """BestOfNError when scorer `by` is unknown or what it needs does not exist yet (before any model work)."""
    try:
        entry = BEST_OF_N_SCORERS.require(by)
    except UnknownKind as exc:
        raise BestOfNError(str(exc)) from None
    missing = {"rm": lambda: current_reward_model(ctx.db) is None, "prm": lambda: current_prm(ctx.db) is None,
               "functions": lambda: ctx.functions is None}.get(by, lambda: False)()
    if missing:
        raise BestOfNError(f"--by {by} needs {entry.needs} first")


def score_by_reward_model(ctx: ScoringContext, conversations: list[list[dict[str, str]]], completions: list[str],
                          columns: dict[str, list[Any]]) -> list[float | None]:
    from rlhf_core.algorithms.evidence import conservative_reward
    from rlhf_core.training.reward_data import PreferenceExample, encode_pairs
    from rlhf_core.training.reward_model import score_pairs
    from rlhf_core.training.workspace_stack import activate_reward_model

    activate_reward_model(ctx.stack, ctx.db)
    cfg = ctx.ws.config.reward
    examples = [PreferenceExample(c, t, t, None, 0) for c, t in zip(conversations, completions)]
    members, _ = score_pairs(ctx.stack, encode_pairs(ctx.stack.tokenizer, examples, cfg.max_length), cfg.batch_size)
    return conservative_reward(members, cfg.conservative, cfg.conservative_lambda).tolist()


def score_by_prm(ctx: ScoringContext, conversations: list[list[dict[str, str]]], completions: list[str],
                 columns: dict[str, list[Any]]) -> list[float | None]:
    from rlhf_core.training.prm_service import PRMScorer, activate_prm

    activate_prm(ctx.ws, ctx.db, ctx.stack)
    return PRMScorer(ctx.ws, ctx.stack)(conversations, completions)


def score_by_functions(ctx: ScoringContext, conversations: list[list[dict[str, str]]], completions: list[str],
                       columns: dict[str, list[Any]]) -> list[float | None]:
    assert ctx.functions is not None  # check_scorer refused before
    return list(ctx.functions(prompts=conversations, completions=[[{"role": "assistant", "content": t}]
                                                                  for t in completions], **columns))


def best_of_n(ctx: ScoringContext, conversations: list[list[dict[str, str]]], *, n: int, by: str,
              version: int | None = None, columns: Sequence[dict[str, Any]] | None = None, max_new_tokens: int = 96,
              temperature: float = 1.0, top_p: float = 1.0, seed: int = 0) -> list[BestOfN]:
    """For each conversation, `n` answers sampled (seeded) from policy `version` (None: the current one), scored
    by `by`, the highest kept. `columns`: each conversation's extra columns, passed to the reward functions."""
    import torch

    from rlhf_core.models.batching import prompt_token_ids
    from rlhf_core.models.generation import SamplingParams
    from rlhf_core.service.playground import resolve_versions
    from rlhf_core.training.workspace_stack import activate_policy

    if not 1 <= n <= MAX_BEST_OF:
        raise BestOfNError(f"--best-of must be between 1 and {MAX_BEST_OF}, not {n}")
    check_scorer(ctx, by)
    (chosen_version,) = resolve_versions(ctx.db, [version])
    stack, eos = ctx.stack, ctx.stack.tokenizer.eos_token_id
    prompts = [prompt_token_ids(stack.tokenizer, c) for c in conversations for _ in range(n)]
    params = SamplingParams(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p)
    try:
        activate_policy(stack, ctx.db, chosen_version.id)
        generator = torch.Generator(device=stack.device).manual_seed(seed)
        outputs = stack.sample(prompts, params, adapter="policy" if chosen_version.adapter_path else None,
                               generator=generator)
    finally:
        activate_policy(stack, ctx.db)
    texts = [stack.tokenizer.decode(ids, skip_special_tokens=True).strip() for ids in outputs]
    per_row = [dict(c) for c in (columns or [{}] * len(conversations)) for _ in range(n)]
    names = sorted({k for row in per_row for k in row})
    flat = {k: [row.get(k) for row in per_row] for k in names}
    repeated = [c for c in conversations for _ in range(n)]
    scores = resolve(BEST_OF_N_SCORERS[by].score)(ctx, repeated, texts, flat)
    results = []
    for i in range(len(conversations)):
        part = slice(i * n, (i + 1) * n)
        candidates = [Candidate(text=t, tokens=len(ids), finish_reason="eos" if ids and ids[-1] == eos else "length",
                                score=None if s is None else float(s))
                      for t, ids, s in zip(texts[part], outputs[part], scores[part], strict=True)]
        results.append(BestOfN(chosen_version.id, by, candidates, pick_best([c.score for c in candidates])))
    return results


def read_prompts_with_columns(path: Path | str, max_prompt_chars: int
                              ) -> tuple[list[list[dict[str, str]]], list[dict[str, Any]]]:
    """A prompt file's conversations and each record's other fields (the columns reward functions read)."""
    def parse(record: Any, where: str) -> tuple[list[dict[str, str]], dict[str, Any]]:  # noqa: ANN401
        conversation = parse_conversation(record, where, max_chars=max_prompt_chars)
        return conversation, {k: v for k, v in record.items() if k not in ("prompt", "messages")}

    try:
        rows = parse_file(path, IMPORT_KINDS["prompts"].schema, parse, what="prompts")
    except InputFileError as exc:
        raise PromptFileError(str(exc)) from None
    return [r[0] for r in rows], [r[1] for r in rows]


class BestOfNPlayground:
    """Best-of-N in the serving process (the operator console's panel), on a model stack borrowed for the duration
    (`borrow`, the pool sampler's model, as `playground.Playground` does), so the page adds no copy of the model."""

    def __init__(self, ws: Workspace, db: Database, borrow: Callable[[], Any],
                 functions: RewardFunction | None = None) -> None:
        self.ws, self.db, self._borrow, self.functions = ws, db, borrow, functions

    def answer(self, prompt: str, version: int | None, n: int, by: str) -> BestOfN:
        """The N candidates and the kept one; BestOfNError or VersionChoiceError (a bad request) before any wait."""
        from rlhf_core.service.playground import prompt_conversation, resolve_versions

        conversation = prompt_conversation(prompt, self.ws.config.labeling.max_prompt_chars)
        resolve_versions(self.db, [version])
        if not 1 <= n <= MAX_BEST_OF:
            raise BestOfNError(f"N must be between 1 and {MAX_BEST_OF}, not {n}")
        check_scorer(ScoringContext(self.ws, self.db, None, self.functions), by)
        cfg = self.ws.config.sampling
        with self._borrow() as stack:
            ctx = ScoringContext(self.ws, self.db, stack, self.functions)
            return best_of_n(ctx, [conversation], n=n, by=by, version=version, max_new_tokens=cfg.max_new_tokens,
                             temperature=cfg.temperature, top_p=cfg.top_p)[0]
