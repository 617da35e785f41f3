"""The shared-base model stack: reference = adapters off, adapters isolated, exact save/load."""

from __future__ import annotations

import pytest
import torch

from rlhf_core.models.batching import (
    build_sequences,
    first_response_column,
    last_token_index,
    prompt_token_ids,
    response_token_ids,
)
from rlhf_core.models.generation import SamplingParams
from rlhf_core.models.loading import load_causal_lm
from rlhf_core.models.stack import ModelStack


def _batch(stack: ModelStack):
    tok = stack.tokenizer
    prompts = [prompt_token_ids(tok, [{"role": "user", "content": t}]) for t in ("hi there", "a longer question")]
    responses = [response_token_ids(tok, t) for t in ("yes", "a much longer answer with words")]
    return build_sequences(prompts, responses, tok.pad_token_id)


def test_last_token_index_reads_the_mask_for_both_padding_sides() -> None:
    right = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    left = torch.tensor([[0, 0, 1, 1, 1], [0, 1, 1, 1, 1]])
    assert last_token_index(right).tolist() == [2, 4]
    assert last_token_index(left).tolist() == [4, 4]


def test_reference_is_the_base_model(tiny_model_dir) -> None:
    stack = ModelStack.load(tiny_model_dir, device="cpu", seed=1)
    batch = _batch(stack)
    plain = load_causal_lm(tiny_model_dir, quantize_4bit=False, device=torch.device("cpu"))
    with torch.no_grad():
        logits = plain(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits[:, :-1].float()
        expected = torch.log_softmax(logits, -1).gather(-1, batch.input_ids[:, 1:, None]).squeeze(-1)
        with stack.reference():
            ref, _ = stack.token_logprobs(batch.input_ids, batch.attention_mask)
    mask = batch.attention_mask[:, 1:].bool()
    assert torch.allclose(ref[mask], expected[mask], atol=1e-5)


def test_response_only_projection_matches_the_full_one(tiny_model_dir) -> None:
    """Projecting the LM head from the first response column on changes nothing the losses read."""
    stack = ModelStack.load(tiny_model_dir, device="cpu", seed=1)
    batch = _batch(stack)
    mask = batch.response_mask.bool()
    assert first_response_column(batch.response_mask) > 0
    with torch.no_grad():
        full, full_entropy = stack.token_logprobs(batch.input_ids, batch.attention_mask, with_entropy=True)
        part, part_entropy = stack.token_logprobs(batch.input_ids, batch.attention_mask, with_entropy=True,
                                                  response_mask=batch.response_mask)
    assert part.shape == full.shape and part_entropy.shape == full_entropy.shape
    assert torch.allclose(part[mask], full[mask], atol=1e-5)
    assert torch.allclose(part_entropy[mask], full_entropy[mask], atol=1e-5)
    assert (part[:, :first_response_column(batch.response_mask)] == 0).all()


@pytest.mark.parametrize("checkpointing", [False, True])
def test_backward_after_leaving_the_adapter_context_gives_the_right_gradients(tiny_model_dir, checkpointing) -> None:
    """Backward outside `use("reward")` must still differentiate through the reward adapter."""
    grads = {}
    for where in ("inside", "outside"):
        stack = ModelStack.load(tiny_model_dir, device="cpu", gradient_checkpointing=checkpointing, seed=3)
        stack.model.train()
        params = stack.trainable_parameters("reward")
        with torch.no_grad():
            for n, p in stack.model.named_parameters():
                if ".reward." in n and "lora_B" in n:
                    p.normal_(0, 0.05, generator=torch.Generator().manual_seed(0))
        batch = _batch(stack)
        if where == "inside":
            with stack.use("reward"):
                stack.reward(batch.input_ids, batch.attention_mask).sum().backward()
        else:
            stack.reward(batch.input_ids, batch.attention_mask).sum().backward()
        grads[where] = [p.grad.clone() for p in params]
        assert all(g.abs().sum() > 0 for g in grads[where])
    for a, b in zip(grads["inside"], grads["outside"]):
        assert torch.allclose(a, b, atol=1e-6)


def test_reset_adapter_restores_weights_and_head(tiny_model_dir, tmp_path) -> None:
    stack = ModelStack.load(tiny_model_dir, device="cpu", seed=2)
    batch = _batch(stack)
    with torch.no_grad():
        before = stack.reward(batch.input_ids, batch.attention_mask)
        for p in stack.trainable_parameters("reward"):
            p.add_(0.1)
        changed = stack.reward(batch.input_ids, batch.attention_mask)
        stack.save_adapter("reward", tmp_path / "rm")
        stack.reset_adapter("reward")
        assert torch.equal(stack.reward(batch.input_ids, batch.attention_mask), before)
        stack.load_adapter("reward", tmp_path / "rm")
        assert torch.equal(stack.reward(batch.input_ids, batch.attention_mask), changed)
    assert not torch.equal(before, changed)
    stack.freeze_adapters()
    assert not any(p.requires_grad for p in stack.heads.parameters())


def test_bfloat16_stack_stores_lora_bases_in_bfloat16_with_the_same_results(perturb, tiny_model_dir) -> None:
    """precision bf16: the frozen Linear weights under LoRA are stored in bfloat16 and LoRA inputs are not
    cast to float32 by PEFT. Autocast rounded both to bfloat16 for every matmul before, so log-probs and
    LoRA gradients are those of float32-stored weights."""
    stored = ModelStack.load(tiny_model_dir, device="cpu", seed=1, precision="bf16", gradient_checkpointing=False)
    rounded = ModelStack.load(tiny_model_dir, device="cpu", seed=1, precision="bf16", gradient_checkpointing=False)
    for layer in rounded.model.modules():  # as before: float32 weights, rounded by autocast at each matmul,
        if hasattr(layer, "get_base_layer") and isinstance(layer.get_base_layer(), torch.nn.Linear):
            layer.get_base_layer().float()
            layer.cast_input_dtype_enabled = True  # and PEFT's cast of each LoRA input to float32
    dtypes = {name: p.dtype for name, p in stored.model.named_parameters()}
    assert dtypes["base_model.model.model.layers.0.self_attn.q_proj.base_layer.weight"] == torch.bfloat16
    assert all(d == torch.float32 for n, d in dtypes.items() if "lora_" in n or "norm" in n or "embed" in n)
    batch = _batch(stored)
    grads = []
    for stack in (stored, rounded):
        perturb(stack, "policy", seed=3)
        stack.trainable_parameters("policy")
        with stack.use("policy"):
            logp, _ = stack.token_logprobs(batch.input_ids, batch.attention_mask, response_mask=batch.response_mask)
            (logp * batch.response_mask).sum().backward()
        grads.append({n: p.grad.clone() for n, p in stack.model.named_parameters() if p.grad is not None})
        assert grads[-1], "the policy adapter got no gradient"
        grads[-1]["logp"] = logp.detach()
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        assert torch.allclose(grads[0][name], grads[1][name], rtol=1e-3, atol=1e-6), name
    # Decoding through the adapter runs under the same autocast (float32 inputs would not meet bfloat16 weights).
    stored.generation_mode = "adapter"
    params = SamplingParams(max_new_tokens=4, temperature=0.0)
    assert all(len(r) >= 1 for r in stored.sample([batch.input_ids[0, :3].tolist()], params))
