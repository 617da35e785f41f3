"""Log-probs through the LM head in vocabulary chunks: hand-computed values, the plain path, gradients."""

from __future__ import annotations

import math

import pytest
import torch

from rlhf_core.algorithms import entropy_from_logits, gather_logprobs, kl_from_logits, linear_kl, linear_logprobs


def test_hand_computed_logprobs_and_entropy_across_chunks() -> None:
    # Vocabulary of 3, one row per chunk. Token 0's hidden state gives logits (0, ln 3, 0) ->
    # softmax (0.2, 0.6, 0.2); token 1's gives (0, 0, 1000): all mass on the last word (no overflow).
    weight = torch.tensor([[0.0, 0.0], [math.log(3.0), 0.0], [0.0, 1.0]], dtype=torch.float64)
    hidden = torch.tensor([[1.0, 0.0], [0.0, 1000.0]], dtype=torch.float64)
    logp, entropy = linear_logprobs(hidden, weight, torch.tensor([1, 2]), with_entropy=True, vocab_chunk=1)
    assert logp.tolist() == pytest.approx([math.log(0.6), 0.0], abs=1e-12)
    expected_entropy = -(2 * 0.2 * math.log(0.2) + 0.6 * math.log(0.6))
    assert entropy.tolist() == pytest.approx([expected_entropy, 0.0], abs=1e-12)


@pytest.mark.parametrize("chunk", [1, 7, 50, 64])
def test_matches_the_full_logits_path_values_and_gradients(chunk: int) -> None:
    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(50, 8, dtype=torch.float64, generator=generator)
    bias = torch.randn(50, dtype=torch.float64, generator=generator)
    hidden = torch.randn(3, 5, 8, dtype=torch.float64, generator=generator, requires_grad=True)
    tokens = torch.randint(0, 50, (3, 5), generator=generator)
    tokens[0, :3] = torch.tensor([0, 49, chunk % 50])  # the first and last word, and a chunk's first
    upstream = torch.randn(3, 5, dtype=torch.float64, generator=generator)

    logp, entropy = linear_logprobs(hidden, weight, tokens, bias=bias, with_entropy=True, vocab_chunk=chunk)
    (grad,) = torch.autograd.grad((logp * upstream).sum(), hidden)
    logits = hidden @ weight.T + bias
    plain = gather_logprobs(logits, tokens)
    (plain_grad,) = torch.autograd.grad((plain * upstream).sum(), hidden)

    assert logp.shape == tokens.shape and entropy.shape == tokens.shape
    torch.testing.assert_close(logp, plain, rtol=0, atol=1e-12)
    torch.testing.assert_close(entropy, entropy_from_logits(logits.detach()), rtol=0, atol=1e-12)
    torch.testing.assert_close(grad, plain_grad, rtol=0, atol=1e-12)
    assert not entropy.requires_grad
    assert torch.autograd.gradcheck(
        lambda h: linear_logprobs(h, weight, tokens, bias=bias, vocab_chunk=chunk)[0], (hidden,))


def test_bfloat16_compute_matches_autocast_on_the_plain_path() -> None:
    generator = torch.Generator().manual_seed(1)
    weight = torch.randn(300, 32, generator=generator) / 4
    hidden = torch.randn(6, 32, generator=generator, requires_grad=True)
    tokens = torch.randint(0, 300, (6,), generator=generator)

    logp, _ = linear_logprobs(hidden, weight, tokens, compute_dtype=torch.bfloat16, vocab_chunk=128)
    (grad,) = torch.autograd.grad(logp.sum(), hidden)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = torch.nn.functional.linear(hidden, weight)
    plain = gather_logprobs(logits.float(), tokens)
    (plain_grad,) = torch.autograd.grad(plain.sum(), hidden)

    assert logp.dtype == torch.float32 and grad.dtype == torch.float32
    torch.testing.assert_close(logp, plain, rtol=0, atol=1e-5)  # the same bfloat16 products, float32 after
    torch.testing.assert_close(grad, plain_grad, rtol=0.02, atol=0.02)  # the plain path rounds dz to bfloat16 once


def test_a_trainable_projection_is_refused() -> None:
    weight = torch.randn(4, 2, requires_grad=True)
    with pytest.raises(ValueError, match="frozen"):
        linear_logprobs(torch.randn(1, 2), weight, torch.tensor([0]))


def test_exact_kl_through_the_head_by_hand_across_chunks() -> None:
    # Vocabulary of 3, one row per chunk. p = softmax(0, ln 3, 0) = (0.2, 0.6, 0.2); q = softmax(0, 0, 0) =
    # (1/3, 1/3, 1/3): KL = 0.2·ln 0.6 + 0.6·ln 1.8 + 0.2·ln 0.6. The second position: the same model twice, 0.
    weight = torch.tensor([[0.0, 0.0], [math.log(3.0), 0.0], [0.0, 1.0]], dtype=torch.float64)
    hidden_p = torch.tensor([[1.0, 0.0], [0.5, 2.0]], dtype=torch.float64)
    hidden_q = torch.tensor([[0.0, 0.0], [0.5, 2.0]], dtype=torch.float64)
    kl = linear_kl(hidden_p, hidden_q, weight, vocab_chunk=1, compute_dtype=torch.float64)
    expected = 0.4 * math.log(0.6) + 0.6 * math.log(1.8)
    assert kl.tolist() == pytest.approx([expected, 0.0], abs=1e-6)
    # Logits of 1000 (a word the policy is sure of) neither overflow nor lose the sum.
    far = linear_kl(torch.tensor([[0.0, 1000.0]]), torch.tensor([[0.0, 0.0]]), weight.float(), vocab_chunk=2)
    assert far.item() == pytest.approx(math.log(3.0), abs=1e-4)  # p = one-hot on word 3, where q = 1/3


@pytest.mark.parametrize("chunk", [1, 7, 64])
def test_exact_kl_matches_the_full_logits_path(chunk: int) -> None:
    generator = torch.Generator().manual_seed(1)
    weight = torch.randn(50, 8, dtype=torch.float64, generator=generator)
    bias = torch.randn(50, dtype=torch.float64, generator=generator)
    hidden_p = torch.randn(3, 5, 8, dtype=torch.float64, generator=generator)
    hidden_q = hidden_p + 0.3 * torch.randn(3, 5, 8, dtype=torch.float64, generator=generator)
    kl = linear_kl(hidden_p, hidden_q, weight, bias=bias, vocab_chunk=chunk)
    plain = kl_from_logits(hidden_p @ weight.T + bias, hidden_q @ weight.T + bias)
    assert kl.shape == (3, 5) and kl.dtype == torch.float32
    assert torch.allclose(kl.double(), plain.double(), atol=1e-5) and (kl > 0).all()
    with pytest.raises(ValueError, match="differ in shape"):
        linear_kl(hidden_p, hidden_q[:2], weight)
