"""The generation path: our decoding loop against HF `generate`, the merged decoding copy against the
adapter, early exit of finished rows, and that generating never disturbs training."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from rlhf_core.models.batching import left_pad
from rlhf_core.models.generation import (
    MergedCopy,
    SamplingParams,
    decode,
    decoding_attention,
    decoding_dtype,
    dtype_name,
    length_batches,
    native_bf16,
    resolve_mode,
)
from rlhf_core.models.stack import ModelStack

PROMPTS = [[5, 6, 7, 8, 9], [10, 11, 12], [13, 14, 15, 16, 17, 18, 19], [20, 21]]


def perturb_policy(stack: ModelStack, seed: int = 1, std: float = 0.05) -> None:
    """A non-identity policy adapter (fresh LoRA has B = 0, i.e. exactly the base)."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, p in stack.model.named_parameters():
            if ".policy." in name and "lora_B" in name:
                p.normal_(0, std)


def use_mode(stack: ModelStack, mode: str, dtype: torch.dtype | None = torch.float32) -> ModelStack:
    stack.generation_mode, stack.generation_dtype = mode, dtype
    return stack


@pytest.fixture
def stack(tiny_model_dir: Path) -> ModelStack:
    s = ModelStack.load(tiny_model_dir, device="cpu")
    perturb_policy(s)
    return s


GREEDY = SamplingParams(max_new_tokens=6, temperature=0.0)


def test_decode_matches_hf_generate_greedy(stack: ModelStack) -> None:
    ids, mask = left_pad(PROMPTS, stack.tokenizer.pad_token_id)
    stack.model.eval()
    with torch.no_grad(), stack.use("policy"):
        hf = stack.model.generate(input_ids=ids, attention_mask=mask, do_sample=False, max_new_tokens=6,
                                  pad_token_id=stack.tokenizer.pad_token_id, eos_token_id=[])
        ours = decode(stack.model, ids, mask, GREEDY, eos_id=-1)  # no eos: compare all six tokens
    assert ours == hf[:, ids.shape[1]:].tolist()


@pytest.mark.parametrize("adapter", ["policy", None])
def test_merged_and_unmerged_generation_give_the_same_greedy_tokens(stack: ModelStack, adapter) -> None:
    unmerged = use_mode(stack, "adapter", None).sample(PROMPTS, GREEDY, adapter=adapter)
    merged = use_mode(stack, "merged", torch.float32).sample(PROMPTS, GREEDY, adapter=adapter)
    assert merged == unmerged
    if adapter is None:
        assert merged != use_mode(stack, "merged").sample(PROMPTS, GREEDY, adapter="policy")


def test_merged_copy_follows_the_adapter_and_leaves_it_unchanged(stack: ModelStack) -> None:
    use_mode(stack, "merged", torch.float32)
    before = {k: v.clone() for k, v in stack._adapter_state("policy").items()}
    first = stack.sample(PROMPTS, GREEDY)
    assert all(torch.equal(v, stack._adapter_state("policy")[k]) for k, v in before.items())
    perturb_policy(stack, seed=2, std=0.2)  # an in-place change, as an optimizer step makes
    changed = stack.sample(PROMPTS, GREEDY)
    assert changed != first
    assert changed == use_mode(stack, "adapter", None).sample(PROMPTS, GREEDY)


def test_bfloat16_merged_copy_keeps_the_rotary_frequencies_in_float32(stack: ModelStack) -> None:
    copy = MergedCopy(stack.model, torch.bfloat16)
    base = dict(stack.model.get_base_model().named_buffers())
    own = dict(copy.model.named_buffers())
    assert any("inv_freq" in name for name in own)
    for name, buf in own.items():
        assert buf.dtype == base[name].dtype and torch.equal(buf, base[name]), name
    assert next(copy.model.parameters()).dtype == torch.bfloat16


def test_the_copy_keeps_the_adapter_beside_its_bfloat16_weights_where_merging_would_round_it_away(
        stack: ModelStack) -> None:
    """A LoRA delta far below bfloat16's rounding step of the weights (as one round's training leaves many):
    merged, bf16(W + δ) is bf16(W) almost everywhere and the copy would decode the base; the copy keeps s·B·A
    beside bf16(W)."""
    perturb_policy(stack, seed=4, std=2e-6)
    copy = MergedCopy(stack.model, torch.bfloat16)
    copy.sync("policy")
    ids, mask = left_pad(PROMPTS, stack.tokenizer.pad_token_id)
    checked = 0
    for name, layer in copy._lora_layers.items():
        own = copy.model.get_submodule(name)
        base_w = layer.get_base_layer().weight.float()
        delta = layer.get_delta_weight("policy").float()
        assert torch.equal(own.weight, base_w.to(torch.bfloat16))  # nothing merged into the weight
        kept = (base_w + delta).to(torch.bfloat16) != base_w.to(torch.bfloat16)
        assert kept.float().mean() < 0.1  # merged, δ would survive in under a tenth of the weights
        kept_delta = own.lora_b.float() @ own.lora_a.float()  # s·B·A, each factor in bfloat16
        assert float((kept_delta - delta).norm() / delta.norm()) < 0.01
        checked += 1
    assert checked > 0
    with torch.no_grad():
        policy = copy.model(input_ids=ids, attention_mask=mask).logits
        copy.sync(None)
        assert all(copy.model.get_submodule(n).lora_a is None for n in copy._lora_layers)
        base = copy.model(input_ids=ids, attention_mask=mask).logits
    assert not torch.equal(policy, base)  # the adapter still shows in what the copy decodes


def test_a_float32_copy_gives_the_adapters_logits(stack: ModelStack) -> None:
    ids, mask = left_pad(PROMPTS, stack.tokenizer.pad_token_id)
    stack.model.eval()
    with torch.no_grad(), stack.use("policy"):
        expected = stack.model(input_ids=ids, attention_mask=mask).logits
    with torch.no_grad():
        got = MergedCopy(stack.model, torch.float32).sync("policy")(input_ids=ids, attention_mask=mask).logits
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_merged_copy_resyncs_only_when_weights_changed(stack: ModelStack) -> None:
    copy = MergedCopy(stack.model, torch.float32)
    model = copy.sync("policy")
    q = next(m for n, m in model.named_modules() if n.endswith("layers.0.self_attn.q_proj"))
    q.weight.data.add_(1.0)  # a marker: a re-sync would overwrite it
    copy.sync("policy")
    assert float(q.weight.data.abs().min()) > 0.5
    perturb_policy(stack, seed=3)
    copy.sync("policy")
    assert float(q.weight.data.abs().min()) < 0.5


def test_rows_leave_at_eos_and_min_new_tokens_holds(stack: ModelStack) -> None:
    eos = stack.tokenizer.eos_token_id
    first_greedy = [row[0] for row in use_mode(stack, "adapter", None).sample(PROMPTS, GREEDY)]
    # Make the first greedy token of every prompt the end of turn: each row stops after one token.
    with torch.no_grad():
        ids, mask = left_pad(PROMPTS, stack.tokenizer.pad_token_id)
        out = decode(stack.model, ids, mask, GREEDY, eos_id=first_greedy[0])
    assert out[0] == [first_greedy[0]]
    assert all(first_greedy[0] not in row[:-1] for row in out)  # nothing follows an end of turn
    forced = stack.sample(PROMPTS, SamplingParams(max_new_tokens=5, temperature=1.0, min_new_tokens=5))
    assert [len(r) for r in forced] == [5] * len(PROMPTS) and all(eos not in r[:4] for r in forced)


def test_top_p_keeps_only_the_nucleus(stack: ModelStack) -> None:
    ids, mask = left_pad([PROMPTS[0]] * 64, stack.tokenizer.pad_token_id)
    with torch.no_grad(), stack.use("policy"):
        stack.model.eval()
        logits = stack.model(input_ids=ids[:1], attention_mask=mask[:1]).logits[0, -1]
        out = decode(stack.model, ids, mask, SamplingParams(max_new_tokens=1, temperature=1.0, top_p=0.05),
                     eos_id=-1, generator=torch.Generator().manual_seed(0))
    probs = logits.softmax(-1).sort(descending=True)
    nucleus = probs.indices[: int((probs.values.cumsum(0) < 0.05).sum()) + 1].tolist()
    assert {row[0] for row in out} <= set(nucleus)


def test_sample_returns_results_in_input_order_across_length_batches(stack: ModelStack) -> None:
    one_by_one = [stack.sample([p], GREEDY)[0] for p in PROMPTS]
    assert stack.sample(PROMPTS, GREEDY, batch_size=2) == one_by_one
    assert length_batches([3, 7, 2, 7], 2) == [[1, 3], [0, 2]]


def test_resolve_mode() -> None:
    cpu = torch.device("cpu")
    assert resolve_mode("adapter", cpu) == ("adapter", None)
    mode, dtype = resolve_mode("merged", cpu)
    assert mode == "merged" and dtype in (torch.bfloat16, torch.float32)
    with pytest.raises(ValueError, match="model.generation"):
        resolve_mode("fast", cpu)


@pytest.mark.parametrize(("generation", "precision"), [(g, p) for g in ("auto", "merged", "adapter")
                                                       for p in ("auto", "bf16", "fp32")])
def test_the_decoding_precision_of_a_workspace_is_the_loaded_stacks(tiny_model_dir: Path, generation: str,
                                                                     precision: str) -> None:
    """`decoding_dtype` (what `rlhf export-model --dtype auto` writes) answers from the settings what a
    loaded stack decodes in: the merged copy's dtype, or the adapter passes' autocast."""
    cpu = torch.device("cpu")
    native = native_bf16(cpu)
    merged = generation == "merged" or (generation == "auto" and native)
    bf16 = native if merged else precision == "bf16" or (precision == "auto" and native)
    expected = torch.bfloat16 if bf16 else torch.float32
    assert decoding_dtype(generation, precision, cpu) == expected
    stack = ModelStack.load(tiny_model_dir, device="cpu", generation=generation, precision=precision)
    assert stack.decoding_dtype == expected
    if merged:  # the copy `sample` decodes with is built in that dtype
        stack.sample(PROMPTS[:1], SamplingParams(max_new_tokens=1, temperature=0.0))
        assert next(stack._merged.model.parameters()).dtype == expected
    assert dtype_name(expected) == ("bfloat16" if bf16 else "float32")


def test_decoding_attention_leaves_out_cudnn_on_cuda_only() -> None:
    # The kernel flags are process-wide, so the CUDA choice can be checked on a CPU-only machine.
    before = torch.backends.cuda.cudnn_sdp_enabled()
    with decoding_attention(torch.device("cuda")):
        assert not torch.backends.cuda.cudnn_sdp_enabled()
        assert torch.backends.cuda.flash_sdp_enabled() and torch.backends.cuda.mem_efficient_sdp_enabled()
    assert torch.backends.cuda.cudnn_sdp_enabled() == before
    with decoding_attention(torch.device("cpu")):
        assert torch.backends.cuda.cudnn_sdp_enabled() == before


def test_4bit_base_merges_by_dequantizing(tiny_model_dir: Path) -> None:
    pytest.importorskip("bitsandbytes")
    stack = ModelStack.load(tiny_model_dir, device="cpu", quantize_4bit=True)
    perturb_policy(stack)
    unmerged = use_mode(stack, "adapter", None).sample(PROMPTS, GREEDY)
    assert use_mode(stack, "merged", torch.float32).sample(PROMPTS, GREEDY) == unmerged
