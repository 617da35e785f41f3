"""Log-probs of chosen tokens through a vocabulary projection, without the [N, V] logits in memory.

A policy update needs one number per response token, log softmax(h·Wᵀ)[token], but the plain way
(`lm_head(hidden)` -> float -> log-softmax -> gather) holds a float32 [N, V] logits tensor for backward
and makes two or three more of that size during it, plus a bfloat16 copy of W under autocast. For a
small model with a large vocabulary (SmolLM2-135M: V = 49152, H = 576) that is the largest tensor of
the whole step. Here the vocabulary is walked in chunks of `vocab_chunk` rows of W: the forward keeps
a running log-sum-exp (and entropy), the backward recomputes each chunk's logits from the saved
hidden states and adds (onehot − softmax)·g·W_chunk. What stays between forward and backward is
[N, H] plus one float per token.

The projection's weight must be frozen (a LoRA model's LM head is); the gradient flows to `hidden` only.
"""

from __future__ import annotations

import torch
from torch import Tensor

VOCAB_CHUNK = 8192


def linear_logprobs(hidden: Tensor, weight: Tensor, tokens: Tensor, *, bias: Tensor | None = None,
                    compute_dtype: torch.dtype | None = None, with_entropy: bool = False,
                    vocab_chunk: int = VOCAB_CHUNK) -> tuple[Tensor, Tensor | None]:
    """log softmax(hidden·weightᵀ + bias)[tokens], and optionally the entropy of that softmax.

    hidden: [..., H] (gradient flows back to it); weight: [V, H] and bias: [V], frozen; tokens: [...]
    int64 in [0, V). compute_dtype: the matmul's dtype (bfloat16 where autocast would use it; None: the
    weight's), logits are float32 from there on. Returns (logp [...], entropy [...] or None), float32
    nats; the entropy carries no gradient.
    """
    if weight.requires_grad or (bias is not None and bias.requires_grad):
        raise ValueError("linear_logprobs computes no gradient for the projection: its weight must be frozen")
    if vocab_chunk < 1:
        raise ValueError(f"vocab_chunk must be >= 1, not {vocab_chunk}")
    shape = tokens.shape
    flat_hidden = hidden.reshape(-1, hidden.shape[-1])
    logp, entropy = _LinearLogprobs.apply(flat_hidden, weight, bias, tokens.reshape(-1),
                                          compute_dtype or weight.dtype, vocab_chunk, with_entropy)
    return logp.view(shape), (entropy.view(shape) if with_entropy else None)


def _chunks(weight: Tensor, bias: Tensor | None, dtype: torch.dtype, size: int):  # noqa: ANN202 - a generator
    acc = _accumulation_dtype(dtype)
    for start in range(0, weight.shape[0], size):
        stop = min(start + size, weight.shape[0])
        yield start, stop, weight[start:stop].to(dtype), (None if bias is None else bias[start:stop].to(acc))


def _accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    """float32 for the softmax statistics (float64 stays float64: gradcheck)."""
    return torch.promote_types(dtype, torch.float32)


def _chunk_positions(tokens: Tensor, start: int, stop: int) -> tuple[Tensor, Tensor]:
    """[N, 1] whether each token falls in vocabulary rows [start, stop), and its column there (clamped)."""
    inside = ((tokens >= start) & (tokens < stop)).unsqueeze(-1)
    return inside, (tokens - start).clamp(0, stop - start - 1).unsqueeze(-1)


def _chunk_logits(hidden: Tensor, w: Tensor, b: Tensor | None) -> Tensor:
    logits = (hidden @ w.T).to(_accumulation_dtype(w.dtype))
    return logits if b is None else logits + b


class _LinearLogprobs(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden: Tensor, weight: Tensor, bias: Tensor | None, tokens: Tensor,  # noqa: ANN001
                dtype: torch.dtype, vocab_chunk: int, with_entropy: bool) -> tuple[Tensor, Tensor]:
        n = hidden.shape[0]
        x = hidden.to(dtype)
        # Running max m, Σ exp(z − m) and Σ exp(z − m)·z over the chunks: log-sum-exp and entropy in one pass.
        stats = {"dtype": _accumulation_dtype(dtype), "device": hidden.device}
        m = torch.full((n,), float("-inf"), **stats)
        s, t, picked = torch.zeros(n, **stats), torch.zeros(n, **stats), torch.zeros(n, **stats)
        with torch.autocast(hidden.device.type, enabled=False):
            for start, stop, w, b in _chunks(weight, bias, dtype, vocab_chunk):
                z = _chunk_logits(x, w, b)
                new_m = torch.maximum(m, z.max(dim=-1).values)
                scale = torch.exp(m - new_m)
                e = torch.exp(z - new_m.unsqueeze(-1))
                s = s * scale + e.sum(dim=-1)
                if with_entropy:
                    t = t * scale + (e * z).sum(dim=-1)
                m = new_m
                inside, local = _chunk_positions(tokens, start, stop)
                picked = torch.where(inside.squeeze(-1), z.gather(-1, local).squeeze(-1), picked)
        lse = m + torch.log(s)
        ctx.save_for_backward(hidden, weight, bias, tokens, lse)
        ctx.dtype, ctx.vocab_chunk = dtype, vocab_chunk
        entropy = lse - t / s if with_entropy else torch.zeros_like(lse)
        ctx.mark_non_differentiable(entropy)
        return picked - lse, entropy

    @staticmethod
    def backward(ctx, grad_logp: Tensor, _grad_entropy: Tensor | None):  # noqa: ANN001, ANN205
        hidden, weight, bias, tokens, lse = ctx.saved_tensors
        x = hidden.to(ctx.dtype)
        acc = _accumulation_dtype(ctx.dtype)
        grad = torch.zeros(hidden.shape, dtype=acc, device=hidden.device)
        g = grad_logp.to(acc).unsqueeze(-1)
        with torch.autocast(hidden.device.type, enabled=False):
            for start, stop, w, b in _chunks(weight, bias, ctx.dtype, ctx.vocab_chunk):
                # d logp / d z = onehot(token) − softmax(z); times the incoming gradient.
                dz = torch.exp(_chunk_logits(x, w, b) - lse.unsqueeze(-1)).mul_(-g)
                inside, local = _chunk_positions(tokens, start, stop)
                dz.scatter_add_(-1, local, g * inside)
                grad += (dz.to(ctx.dtype) @ w).to(acc)
        return grad.to(hidden.dtype), None, None, None, None, None, None


@torch.no_grad()
def linear_kl(hidden_p: Tensor, hidden_q: Tensor, weight: Tensor, *, bias: Tensor | None = None,
              compute_dtype: torch.dtype | None = None, vocab_chunk: int = VOCAB_CHUNK) -> Tensor:
    """KL(p ‖ q) over the whole vocabulary at each position, where p = softmax(hidden_p·Wᵀ + b) and
    q = softmax(hidden_q·Wᵀ + b): two models (a policy and its reference) that share the LM head.

    hidden_p, hidden_q: [..., H]; returns [...] float32 nats, never negative. This is the exact per-token
    KL at the sampled prefixes, Σ_v p(v)·(log p(v) − log q(v)); the one-token estimates k1 and k3 draw
    the next token instead, and k3 has a heavy tail where the policy has pushed down a token the
    reference likes. One pass over the vocabulary in chunks: running maxima and sums for both
    log-sum-exps, and Σ exp(z_p − m_p)·(z_p − z_q) rescaled as m_p grows.
    """
    if hidden_p.shape != hidden_q.shape:
        raise ValueError(f"hidden_p and hidden_q differ in shape: {tuple(hidden_p.shape)} vs {tuple(hidden_q.shape)}")
    if vocab_chunk < 1:
        raise ValueError(f"vocab_chunk must be >= 1, not {vocab_chunk}")
    shape = hidden_p.shape[:-1]
    dtype = compute_dtype or weight.dtype
    xp = hidden_p.reshape(-1, hidden_p.shape[-1]).to(dtype)
    xq = hidden_q.reshape(-1, hidden_q.shape[-1]).to(dtype)
    stats = {"dtype": _accumulation_dtype(dtype), "device": hidden_p.device}
    n = xp.shape[0]
    mp, mq = torch.full((n,), float("-inf"), **stats), torch.full((n,), float("-inf"), **stats)
    sp, sq, cross = torch.zeros(n, **stats), torch.zeros(n, **stats), torch.zeros(n, **stats)
    with torch.autocast(hidden_p.device.type, enabled=False):
        for _start, _stop, w, b in _chunks(weight, bias, dtype, vocab_chunk):
            zp, zq = _chunk_logits(xp, w, b), _chunk_logits(xq, w, b)
            new_mp = torch.maximum(mp, zp.max(dim=-1).values)
            new_mq = torch.maximum(mq, zq.max(dim=-1).values)
            scale_p = torch.exp(mp - new_mp)
            ep = torch.exp(zp - new_mp.unsqueeze(-1))
            sp = sp * scale_p + ep.sum(dim=-1)
            cross = cross * scale_p + (ep * (zp - zq)).sum(dim=-1)
            sq = sq * torch.exp(mq - new_mq) + torch.exp(zq - new_mq.unsqueeze(-1)).sum(dim=-1)
            mp, mq = new_mp, new_mq
    kl = cross / sp - (mp + torch.log(sp)) + (mq + torch.log(sq))
    return kl.clamp_min(0.0).float().view(shape)
