"""Which of a prompt's candidate pairs go to people (`sampling.pair_selection`).

Sampling draws n responses per prompt, which makes n(n−1)/2 candidate pairs. "all" asks about
every one; "random" about at most `sampling.max_pairs_per_prompt` chosen at random; "uncertainty"
about the ones the reward model knows least about: the pairs whose members of the reward
ensemble disagree most on the preference (Christiano et al. 2017, 2.2.4), or with a one-member
model the pairs whose predicted preference is closest to 1/2. Until a reward model exists,
"uncertainty" falls back to random. The cap keeps diversity: one prompt never fills the queue.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from rlhf_core.algorithms.preference import pair_information
from rlhf_core.models.batching import build_sequences, prompt_token_ids, response_token_ids
from rlhf_core.models.stack import ModelStack

SELECTIONS = ("all", "random", "uncertainty")


@dataclass(frozen=True)
class SelectedPairs:
    """The chosen candidate pairs (indices into the prompt's responses), their information scores
    (0 when not scored) and the method that really chose them ("random" when uncertainty had no model)."""

    pairs: list[tuple[int, int]]
    info_scores: list[float]
    selection: str


def distinct_responses(texts: Sequence[str]) -> tuple[list[int], int, int]:
    """Indices of the first copy of each distinct non-empty response (whitespace-insensitive),
    and the counts of identical and of empty ones."""
    seen: set[str] = set()
    keep: list[int] = []
    empty = identical = 0
    for i, text in enumerate(texts):
        key = " ".join(text.split())
        if not key:
            empty += 1
        elif key in seen:
            identical += 1
        else:
            seen.add(key)
            keep.append(i)
    return keep, identical, empty


def candidate_pairs(keep: Sequence[int]) -> list[tuple[int, int]]:
    return [(keep[a], keep[b]) for a in range(len(keep)) for b in range(a + 1, len(keep))]


def select_pairs(candidates: list[tuple[int, int]], method: str, cap: int, rng: random.Random,
                 member_scores: torch.Tensor | None = None) -> SelectedPairs:
    """Pick pairs among `candidates` by `method`; `cap` = at most this many (0 = no cap, ignored by "all").

    member_scores: [n, K] reward-ensemble scores of the prompt's n responses (uncertainty only).
    """
    if method not in SELECTIONS:
        raise ValueError(f"sampling.pair_selection must be one of {', '.join(SELECTIONS)}, not {method!r}")
    if method == "all" or not candidates:
        return SelectedPairs(list(candidates), [0.0] * len(candidates), "all")
    limit = len(candidates) if cap <= 0 else min(cap, len(candidates))
    if method == "uncertainty" and member_scores is not None:
        index_a = torch.tensor([a for a, _ in candidates])
        index_b = torch.tensor([b for _, b in candidates])
        info = pair_information(member_scores[index_a], member_scores[index_b]).tolist()
        order = sorted(range(len(candidates)), key=lambda i: (-info[i], i))[:limit]
        return SelectedPairs([candidates[i] for i in order], [info[i] for i in order], "uncertainty")
    chosen = rng.sample(range(len(candidates)), limit)
    return SelectedPairs([candidates[i] for i in sorted(chosen)], [0.0] * limit, "random")


@torch.no_grad()
def response_member_scores(stack: ModelStack, conversations: Sequence[list[dict[str, str]]],
                           texts: Sequence[str], *, max_length: int, batch_size: int = 16) -> torch.Tensor:
    """The reward ensemble's member scores of each (conversation, response): [N, K], eval mode."""
    tok = stack.tokenizer
    was_training = stack.model.training
    stack.model.eval()
    out = []
    try:
        for start in range(0, len(texts), batch_size):
            prompts = [prompt_token_ids(tok, c) for c in conversations[start:start + batch_size]]
            responses = [response_token_ids(tok, t, max(2, max_length - len(p)))
                         for p, t in zip(prompts, texts[start:start + batch_size])]
            batch = build_sequences(prompts, responses, tok.pad_token_id).to(stack.device)
            out.append(stack.reward_members(batch.input_ids, batch.attention_mask, batch.response_mask).float().cpu())
    finally:
        stack.model.train(was_training)
    return torch.cat(out)
