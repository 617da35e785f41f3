"""Preference data for the reward model: judgments -> (chosen, rejected) examples -> token batches."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields, replace

import torch
from torch import Tensor

from rlhf_core.algorithms.preference import margins_from_strength
from rlhf_core.models.batching import SequenceBatch, build_sequences, prompt_token_ids, response_token_ids
from storage import DemonstrationRow, JudgmentRow, PriorRow


class NotEnoughJudgmentsError(ValueError):
    """Too few decisive judgments to train a reward model: the person's move is to collect more."""


@dataclass(frozen=True)
class PreferenceExample:
    """One decisive judgment: under `prompt_messages`, `chosen` was preferred to `rejected`."""

    prompt_messages: list[dict[str, str]]
    chosen: str
    rejected: str
    strength: str | None
    prompt_id: int
    tie: bool = False  # judged a tie: `chosen` and `rejected` are just sides a and b
    weight: float = 1.0  # relative to one human judgment (a prior judgment: reward.prior_weight)
    annotator: str | None = None  # who judged it (None: not a person's judgment); read by reward.annotator_model
    chosen_left: bool | None = None  # the chosen side was shown on the left (CrowdBT's position bias)
    ai: bool = False  # an AI judge's judgment (`rlhf judge`): trains, capped at reward.ai_weight; never held out


@dataclass(frozen=True)
class EncodedPair:
    """Token ids of one example, already truncated: prompt + chosen and prompt + rejected."""

    prompt: list[int]
    chosen: list[int]
    rejected: list[int]
    strength: str | None
    tie: bool = False
    weight: float = 1.0  # the example's weight in the loss (PreferenceExample.weight)

    @property
    def tokens(self) -> int:
        """Tokens of both sequences, prompt counted twice: the length `length_grouped_batches` sorts by."""
        return 2 * len(self.prompt) + len(self.chosen) + len(self.rejected)


def preference_examples(rows: Sequence[JudgmentRow], *, include_ties: bool = False
                        ) -> tuple[list[PreferenceExample], dict[str, int]]:
    """Turn judgment rows into Bradley-Terry training examples.

    "a" -> a chosen over b; "b" -> b chosen over a. Every judgment is its own example, so a pair
    judged by k annotators counts k times and a split vote (one "a", one "b") pulls the pair's
    modelled probability towards 1/2, which is the maximum-likelihood answer.

    Excluded, and counted in the returned stats:
    - "tie", unless `include_ties` (for Davidson's tie model, `reward.ties = "davidson"`): plain
      Bradley-Terry has no tie outcome, and forcing a tie into a win for either side would teach
      a preference nobody expressed. Included ties are examples with `tie=True`, sides a and b.
    - "both_bad": says both responses are unacceptable but carries no ordering between them.

    Returns (examples, stats) with stats keys judgments, decisive, ties_excluded, both_bad_excluded.
    """
    examples: list[PreferenceExample] = []
    stats = {"judgments": len(rows), "decisive": 0, "ties_excluded": 0, "both_bad_excluded": 0}
    for row in rows:
        if row.choice in ("a", "b"):
            chosen, rejected = (row.text_a, row.text_b) if row.choice == "a" else (row.text_b, row.text_a)
            examples.append(PreferenceExample(prompt_messages=row.prompt_messages, chosen=chosen, rejected=rejected,
                                              strength=row.strength, prompt_id=row.prompt_id, annotator=row.annotator,
                                              chosen_left=row.choice == row.left_side,
                                              ai=row.annotator_kind == "ai"))
            stats["decisive"] += 1
        elif row.choice == "tie" and include_ties:
            examples.append(PreferenceExample(prompt_messages=row.prompt_messages, chosen=row.text_a,
                                              rejected=row.text_b, strength=None, prompt_id=row.prompt_id, tie=True,
                                              ai=row.annotator_kind == "ai"))
            stats["ties_used"] = stats.get("ties_used", 0) + 1
        elif row.choice == "tie":
            stats["ties_excluded"] += 1
        elif row.choice == "both_bad":
            stats["both_bad_excluded"] += 1
        else:
            raise ValueError(f"judgment {row.judgment_id} has unknown choice {row.choice!r}; "
                             "expected a, b, tie or both_bad")
    return examples, stats


def prior_examples(rows: Sequence[PriorRow], prior_weight: float) -> list[PreferenceExample]:
    """Prior judgments (`rlhf preferences import`) as examples weighted `row.weight * prior_weight` relative to
    a human judgment; rows of weight 0 are left out."""
    return [PreferenceExample(prompt_messages=row.prompt_messages, chosen=row.chosen, rejected=row.rejected,
                              strength=None, prompt_id=row.prompt_id, weight=row.weight * prior_weight)
            for row in rows if row.weight * prior_weight > 0]


def edit_examples(rows: Sequence[DemonstrationRow]) -> list[PreferenceExample]:
    """`reward.use_edits`: each demonstration written as an edit of a response is the preference "edited >
    original" (a cheap signal: the annotator changed it for a reason), weighted as one human judgment."""
    return [PreferenceExample(prompt_messages=row.prompt_messages, chosen=row.text, rejected=row.original_text,
                              strength=None, prompt_id=row.prompt_id)
            for row in rows if row.original_text is not None and row.original_text.strip() != row.text.strip()]


def capped_ai_weight(examples: Sequence[PreferenceExample], cap: float) -> list[PreferenceExample]:
    """`examples` with each AI judge's judgment weighing at most `cap` (`reward.ai_weight`, relative to a human
    judgment; its CrowdBT weight when that is less); at a cap of 0 AI judgments are left out. People's pass."""
    return [e if not e.ai or e.weight <= cap else replace(e, weight=cap) for e in examples if not e.ai or cap > 0]


def people_held_out(heldout: Sequence[PreferenceExample]) -> list[PreferenceExample]:
    """The held-out examples that measure the model: people's judgments only, while there are any (a judge's
    labels on held-out prompts are then left out, not trained on: no prompt is on both sides)."""
    people = [e for e in heldout if not e.ai]
    return people if people else list(heldout)


def split_by_prompt(examples: Sequence[PreferenceExample], eval_fraction: float, seed: int
                    ) -> tuple[list[PreferenceExample], list[PreferenceExample]]:
    """Split into (train, held-out) so that no prompt appears in both.

    Held-out accuracy then measures generalisation to new prompts, not memorised pairs.
    About `eval_fraction` of the distinct prompts are held out (at least one when there are two or
    more and eval_fraction > 0; never all of them). With a single prompt the held-out set is empty.
    Deterministic in (examples, eval_fraction, seed); example order is preserved within each part.
    """
    if not 0.0 <= eval_fraction < 1.0:
        raise ValueError(f"eval_fraction must be in [0, 1), got {eval_fraction}")
    prompts = sorted({ex.prompt_id for ex in examples})
    random.Random(seed).shuffle(prompts)
    n_heldout = round(len(prompts) * eval_fraction)
    if eval_fraction > 0 and len(prompts) >= 2:
        n_heldout = max(n_heldout, 1)
    n_heldout = min(n_heldout, max(len(prompts) - 1, 0))
    heldout_prompts = set(prompts[:n_heldout])
    train = [ex for ex in examples if ex.prompt_id not in heldout_prompts]
    heldout = [ex for ex in examples if ex.prompt_id in heldout_prompts]
    return train, heldout


def encode_pair(tokenizer, example: PreferenceExample, max_length: int) -> EncodedPair:
    """Tokenize one example so that prompt + either response fits in `max_length` tokens.

    A response is capped (keeping its start and the end-of-turn token the score is read at) so the
    prompt keeps at least half the budget; the prompt then keeps its end, where the question being
    answered usually is. Both responses see the same truncated prompt, so the comparison stays fair.
    """
    if max_length < 4:
        raise ValueError(f"max_length must be at least 4 tokens, got {max_length}")
    prompt = prompt_token_ids(tokenizer, example.prompt_messages)
    response_cap = max_length - min(len(prompt), max_length // 2)
    chosen = response_token_ids(tokenizer, example.chosen, response_cap)
    rejected = response_token_ids(tokenizer, example.rejected, response_cap)
    prompt_budget = max_length - max(len(chosen), len(rejected))
    if len(prompt) > prompt_budget:
        prompt = prompt[-prompt_budget:]
    return EncodedPair(prompt=prompt, chosen=chosen, rejected=rejected, strength=example.strength, tie=example.tie,
                      weight=example.weight)


def encode_pairs(tokenizer, examples: Sequence[PreferenceExample], max_length: int) -> list[EncodedPair]:
    return [encode_pair(tokenizer, ex, max_length) for ex in examples]


def pair_batch(pairs: Sequence[EncodedPair], pad_id: int, *, with_margin: bool
               ) -> tuple[SequenceBatch, Tensor | None]:
    """Chosen then rejected sequences of B pairs in one right-padded batch of 2B rows.

    Row i is pair i's chosen response and row B + i its rejected one; input_ids / attention_mask
    are [2B, T]. Returns the batch and the BT margins [B] (None unless `with_margin`).
    """
    prompts = [p.prompt for p in pairs]
    batch = build_sequences(prompts + prompts, [p.chosen for p in pairs] + [p.rejected for p in pairs], pad_id)
    margin = margins_from_strength([p.strength for p in pairs]) if with_margin else None
    return batch, margin


@dataclass
class PackedResponses:
    """Rows of [prompt | response 1 | ... | response S]: each prompt computed once for all its responses.

    Every response's tokens see the prompt and themselves, never another response (a [B, 1, L, L]
    boolean attention mask), and their positions continue from the prompt, so every token gets exactly
    the hidden state it would get in its own prompt + response sequence. Rows are right-padded; a pad
    token sees only itself. `response_masks` [B, S, L] mark each response's tokens and `last` [B, S]
    its last one; a row with fewer than S responses has empty slots (no tokens, `present` False).
    """

    input_ids: Tensor
    attention_mask: Tensor
    position_ids: Tensor
    response_masks: Tensor
    last: Tensor

    @property
    def present(self) -> Tensor:
        """[B, S]: which slots hold a response."""
        return self.response_masks.any(dim=-1)

    def predictors(self) -> Tensor:
        """[B, L]: the position whose hidden state predicts each token. The one before it, except for a
        response's first token: that follows the prompt, not the response packed before it, so the
        prompt's last position predicts it."""
        n, width = self.input_ids.shape
        source = (torch.arange(width, device=self.input_ids.device) - 1).clamp(min=0).expand(n, width).clone()
        first = self.response_masks.to(torch.int8).argmax(dim=-1)  # [B, S]: each slot's first token
        prompt_last = (first[:, :1] - 1).clamp(min=0).expand_as(first)
        present = self.present
        source[present.nonzero(as_tuple=True)[0], first[present]] = prompt_last[present]
        return source

    def to(self, device) -> PackedResponses:  # noqa: ANN001
        return PackedResponses(*(getattr(self, f.name).to(device) for f in fields(self)))


def packed_response_batch(rows: Sequence[tuple[Sequence[int], Sequence[Sequence[int]]]], pad_id: int
                          ) -> PackedResponses:
    """Pack (prompt, responses) rows for one forward pass over len(rows) rows (see PackedResponses)."""
    width = max(len(prompt) + sum(len(r) for r in responses) for prompt, responses in rows)
    slots = max(len(responses) for _, responses in rows)
    n = len(rows)
    ids = torch.full((n, width), pad_id, dtype=torch.long)
    positions = torch.zeros((n, width), dtype=torch.long)
    allowed = torch.zeros((n, width, width), dtype=torch.bool)
    masks = torch.zeros((n, slots, width), dtype=torch.bool)
    last = torch.zeros((n, slots), dtype=torch.long)
    causal = torch.ones((width, width), dtype=torch.bool).tril()
    for i, (prompt, responses) in enumerate(rows):
        p = len(prompt)
        ids[i, :p] = torch.tensor(list(prompt), dtype=torch.long)
        positions[i, :p] = torch.arange(p)
        allowed[i, :p, :p] = causal[:p, :p]
        start = p
        for k, response in enumerate(responses):
            r = len(response)
            if r == 0:
                raise ValueError("a packed response needs at least one token")
            end = start + r
            ids[i, start:end] = torch.tensor(list(response), dtype=torch.long)
            positions[i, start:end] = torch.arange(p, p + r)
            allowed[i, start:end, :p] = True
            allowed[i, start:end, start:end] = causal[:r, :r]
            masks[i, k, start:end] = True
            last[i, k] = end - 1
            start = end
        pad = torch.arange(start, width)
        allowed[i, pad, pad] = True  # a pad query must see something, or softmax gives NaN
    return PackedResponses(ids, allowed.unsqueeze(1), positions, masks, last)


def packed_unique_responses(pairs: Sequence[EncodedPair], pad_id: int, rows_per_batch: int, max_slots: int = 6
                            ) -> tuple[list[PackedResponses], Tensor, Tensor]:
    """`pairs` regrouped so that every distinct (prompt, response) is scored once: rows of a prompt with
    up to `max_slots` of its distinct responses (a prompt with n samples has up to n(n-1)/2 pairs but n
    responses; the cap keeps a row's quadratic attention small when a prompt has collected many).

    Returns the batches (at most `rows_per_batch` rows each) and, per pair, the index of its chosen and
    of its rejected response ([B] each) among the distinct responses in packing order: batch by batch,
    row by row, slot by slot, which is the order of `scores[batch.present]` concatenated over the batches.
    """
    seen: set[tuple[tuple[int, ...], tuple[int, ...]]] = set()  # (prompt, response)
    rows: list[tuple[tuple[int, ...], list[tuple[int, ...]]]] = []
    open_row: dict[tuple[int, ...], int] = {}  # prompt -> its newest row
    for pair in pairs:
        prompt = tuple(pair.prompt)
        for response in (tuple(pair.chosen), tuple(pair.rejected)):
            if (prompt, response) not in seen:
                seen.add((prompt, response))
                row = open_row.get(prompt)
                if row is None or len(rows[row][1]) >= max_slots:
                    row = open_row[prompt] = len(rows)
                    rows.append((prompt, []))
                rows[row][1].append(response)
    order = {(prompt, r): i for i, (prompt, r) in enumerate((p, r) for p, responses in rows for r in responses)}
    batches = [packed_response_batch(rows[start:start + rows_per_batch], pad_id)
               for start in range(0, len(rows), rows_per_batch)]
    chosen = torch.tensor([order[tuple(p.prompt), tuple(p.chosen)] for p in pairs], dtype=torch.long)
    rejected = torch.tensor([order[tuple(p.prompt), tuple(p.rejected)] for p in pairs], dtype=torch.long)
    return batches, chosen, rejected


def per_pair_values(pairs: Sequence[EncodedPair], pad_id: int, device: torch.device,
                    values: Callable[[PackedResponses], Tensor]) -> tuple[Tensor, Tensor]:
    """`values` ([B, S, ...] per packed slot, e.g. reward scores or log-probs) of each pair's chosen and
    rejected response, from one forward pass: the pairs packed as one batch by `packed_unique_responses`,
    so each distinct (prompt, response) is computed once and the graph is kept."""
    (packed,), chosen, rejected = packed_unique_responses(pairs, pad_id, rows_per_batch=len(pairs))
    packed = packed.to(device)
    found = values(packed)[packed.present]  # [distinct responses, ...]
    return found[chosen.to(found.device)], found[rejected.to(found.device)]


def _windowed_batches(units: list[list[int]], tokens: Callable[[list[int]], int], batch_size: int, window: int,
                      rng: random.Random) -> list[list[int]]:
    """Units (lists of pair indices kept together) shuffled, sorted by `tokens` within windows of `window`
    units, and added to a batch until it holds at least `batch_size` pairs; batch order shuffled."""
    rng.shuffle(units)
    batches: list[list[int]] = []
    current: list[int] = []
    for start in range(0, len(units), window):
        for unit in sorted(units[start:start + window], key=tokens):
            current += unit
            if len(current) >= batch_size:
                batches.append(current)
                current = []
    if current:
        batches.append(current)
    rng.shuffle(batches)
    return batches


def prompt_grouped_batches(pairs: Sequence[EncodedPair], batch_size: int, rng: random.Random) -> list[list[int]]:
    """Indices of `pairs` in batches of whole prompts, batch order shuffled (one epoch).

    All of a prompt's pairs go into one batch, as InstructGPT trained its reward model on all
    comparisons of a prompt together: each response is computed once for all its pairs
    (`packed_unique_responses`), and a prompt's correlated comparisons make one step, not several.
    Prompts are shuffled, sorted by length within windows of 16 batches (little padding), and added
    to a batch until it holds at least `batch_size` pairs.
    """
    units: dict[tuple[int, ...], list[int]] = {}
    for i, pair in enumerate(pairs):
        units.setdefault(tuple(pair.prompt), []).append(i)

    def tokens(unit: list[int]) -> int:  # the prompt once, each distinct response once
        responses = {r for i in unit for r in (tuple(pairs[i].chosen), tuple(pairs[i].rejected))}
        return len(pairs[unit[0]].prompt) + sum(len(r) for r in responses)

    per_batch = max(1.0, batch_size / (len(pairs) / max(1, len(units))))  # prompts per batch, about
    return _windowed_batches(list(units.values()), tokens, batch_size, max(1, round(16 * per_batch)), rng)


def length_grouped_batches(pairs: Sequence[EncodedPair], batch_size: int, rng: random.Random) -> list[list[int]]:
    """Indices of `pairs` in batches of similar length, batch order shuffled (one epoch).

    Shuffles, then sorts by length within windows of 16 batches, so a batch pads little while
    the data still arrives in a random order (as `group_by_length` does in transformers).
    """
    return _windowed_batches([[i] for i in range(len(pairs))], lambda unit: pairs[unit[0]].tokens, batch_size,
                             16 * batch_size, rng)
