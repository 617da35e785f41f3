"""The baseline of `bench/reward_learning.py`: a frozen-feature linear probe, i.e. logistic
Bradley-Terry r(x) = w · φ(x) on the frozen base model's pooled last-layer hidden states φ
(adapters disabled), fitted with L2 by L-BFGS; the L2 strength is picked on a prompt-disjoint split."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from rlhf_core.models.batching import build_sequences, prompt_token_ids, response_token_ids
from rlhf_core.training.reward_data import split_by_prompt

L2_GRID = (1e-4, 1e-3, 1e-2, 1e-1)


@torch.no_grad()
def frozen_features(stack, conversations, texts, *, pooling: str, max_length: int, batch_size: int = 16):
    """[N, H] float32 features of the base model (no adapter): last token or mean of the response."""
    tok = stack.tokenizer
    out = []
    stack.model.eval()
    for start in range(0, len(texts), batch_size):
        prompts = [prompt_token_ids(tok, c) for c in conversations[start:start + batch_size]]
        responses = [response_token_ids(tok, t, max(2, max_length - len(p)))
                     for p, t in zip(prompts, texts[start:start + batch_size])]
        b = build_sequences(prompts, responses, tok.pad_token_id).to(stack.device)
        with stack.model.disable_adapter():
            hidden = stack.hidden_states(b.input_ids, b.attention_mask).float()
        if pooling == "mean":
            w = F.pad(b.response_mask, (1, 0)).unsqueeze(-1)
            out.append(((hidden * w).sum(1) / w.sum(1).clamp(min=1)).cpu())
        else:
            last = (torch.arange(b.attention_mask.shape[1], device=b.attention_mask.device)
                    * b.attention_mask).argmax(dim=1)
            out.append(hidden[torch.arange(hidden.shape[0]), last].cpu())
    return torch.cat(out)


def fit_bt_probe(diff: torch.Tensor, l2: float) -> torch.Tensor:
    """w minimising mean softplus(−diff · w) + l2 |w|² (diff = φ(chosen) − φ(rejected), standardised)."""
    w = torch.zeros(diff.shape[1], dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([w], max_iter=200, line_search_fn="strong_wolfe")
    x = diff.double()

    def closure():
        optimizer.zero_grad()
        loss = F.softplus(-(x @ w)).mean() + l2 * (w * w).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return w.detach()


def linear_probe_accuracy(stack, examples, heldout_pairs, *, pooling: str, max_length: int) -> float:
    """Gold accuracy on `heldout_pairs` ({"conv", "a", "b", "a_wins"}) of a probe fitted on `examples`."""
    def feats(exs):
        convs = [e.prompt_messages for e in exs]
        return (frozen_features(stack, convs, [e.chosen for e in exs], pooling=pooling, max_length=max_length)
                - frozen_features(stack, convs, [e.rejected for e in exs], pooling=pooling, max_length=max_length))

    train, val = split_by_prompt(examples, 0.25, 0)
    d_train, d_val = feats(train), feats(val)
    scale = d_train.std(dim=0).clamp(min=1e-6)
    best = max(L2_GRID, key=lambda l2: float(((d_val / scale).double() @ fit_bt_probe(d_train / scale, l2) > 0)
                                             .double().mean()))
    w = fit_bt_probe(torch.cat([d_train, d_val]) / scale, best)
    convs = [p["conv"] for p in heldout_pairs]
    diff = (frozen_features(stack, convs, [p["a"] for p in heldout_pairs], pooling=pooling, max_length=max_length)
            - frozen_features(stack, convs, [p["b"] for p in heldout_pairs], pooling=pooling, max_length=max_length))
    predicted = (diff / scale).double() @ w > 0
    gold = torch.tensor([p["a_wins"] for p in heldout_pairs])
    return float((predicted == gold).double().mean())
