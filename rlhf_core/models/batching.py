"""Turning conversations and responses into padded token tensors with the right masks."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class SequenceBatch:
    """Right-padded prompt+response sequences.

    input_ids, attention_mask: [B, T]. response_mask: [B, T-1], aligned with log-probs of tokens
    1..T-1 (position t says whether token t+1 belongs to the response).
    """

    input_ids: Tensor
    attention_mask: Tensor
    response_mask: Tensor

    def to(self, device: torch.device) -> SequenceBatch:
        return SequenceBatch(self.input_ids.to(device), self.attention_mask.to(device), self.response_mask.to(device))


def prompt_token_ids(tokenizer, messages: list[dict[str, str]], max_prompt_tokens: int | None = None) -> list[int]:
    """Chat-templated prompt tokens ending with the assistant header; long prompts keep their end."""
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    if isinstance(ids, dict) or hasattr(ids, "input_ids"):
        ids = ids["input_ids"]
    ids = list(ids)
    if max_prompt_tokens and len(ids) > max_prompt_tokens:
        ids = ids[-max_prompt_tokens:]
    return ids


def response_token_ids(tokenizer, text: str, max_tokens: int | None = None) -> list[int]:
    """Tokens of a response followed by the end-of-turn token, as the model would emit them."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if max_tokens:
        ids = ids[: max_tokens - 1]
    return ids + [tokenizer.eos_token_id]


def left_pad(sequences: list[list[int]], pad_id: int) -> tuple[Tensor, Tensor]:
    """Left-padded ids and attention mask for generation: -> ([B, T], [B, T])."""
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for i, s in enumerate(sequences):
        ids[i, width - len(s):] = torch.tensor(s, dtype=torch.long)
        mask[i, width - len(s):] = 1
    return ids, mask


def build_sequences(prompts: list[list[int]], responses: list[list[int]], pad_id: int) -> SequenceBatch:
    """Concatenate prompt and response token ids per row and right-pad them."""
    rows = [p + r for p, r in zip(prompts, responses)]
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    response_mask = torch.zeros((len(rows), width - 1), dtype=torch.float32)
    for i, (p, r) in enumerate(zip(prompts, responses)):
        n = len(p) + len(r)
        ids[i, :n] = torch.tensor(p + r, dtype=torch.long)
        mask[i, :n] = 1
        response_mask[i, len(p) - 1: n - 1] = 1.0
    return SequenceBatch(ids, mask, response_mask)


def split_generated(generated: Tensor, prompt_width: int, eos_id: int, pad_id: int) -> list[list[int]]:
    """Response token ids from `generate` output [B, prompt_width + N]: cut after the first eos.

    The eos itself is kept (it ends the turn and carries the reward); rows that hit the length
    limit have none. Tokens after eos are padding even when pad == eos.
    """
    out = []
    for row in generated[:, prompt_width:].tolist():
        if eos_id in row:
            row = row[: row.index(eos_id) + 1]
        out.append(row)
    return out


def first_response_column(response_mask: Tensor) -> int:
    """The first column of a [B, T-1] response mask that any row uses (0 when none does)."""
    used = response_mask.any(dim=0).nonzero()
    return int(used[0]) if len(used) else 0


def last_token_index(attention_mask: Tensor) -> Tensor:
    """Index of the last real (mask == 1) token per row, for any padding side. [B, T] -> [B].

    Reads the mask, not token ids, so it is right even when pad == eos (as in SmolLM2).
    """
    positions = torch.arange(attention_mask.shape[1], device=attention_mask.device)
    return (positions * attention_mask.long()).argmax(dim=1)
