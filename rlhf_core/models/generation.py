"""Sampling continuations: the one generation path that pair sampling, PPO/GRPO rollouts and evaluation use.

Two choices make it fast (measured by `bench/generation.py`):

- **Which weights decode.** `merged`: a plain, PEFT-free copy of the model whose LoRA-targeted
  Linear weights hold base + the adapter's delta, in bfloat16 where the hardware computes it natively
  (CUDA; CPUs with AVX512-BF16 or AMX). It is re-synced only when the adapter's weights changed
  (tensor version counters tell), so a round pays one merge per policy update, not one per batch.
  `adapter`: decode through the PEFT model with the adapter applied on the fly (no extra memory).
  Version 0 (adapter None) decodes the bare base either way.
- **How it decodes.** Our own loop over a KV cache: prompts sorted by length so a batch carries
  little left padding, and rows that emitted end-of-turn leave the batch at once (their cache rows
  are dropped), so a batch costs what its live rows cost rather than what its longest row costs.

Sampling follows the usual order: temperature, then nucleus (top-p); temperature 0 is greedy. A
rollout sampled from the bfloat16 copy is very slightly off-policy for the float32 policy that
trains on it; its log-probs are always recomputed by the training model. `decoding_dtype` says which
precision a workspace decodes in: `rlhf generate` prints it, and `rlhf export-model` writes a merged
policy in it, so the model you try is the model you export.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from peft.tuners.lora import LoraLayer
from torch import Tensor, nn
from transformers import DynamicCache

from rlhf_core.models.batching import left_pad
from rlhf_core.models.loading import default_dtype

GENERATION_MODES = ("auto", "merged", "adapter")

# Attention kernels allowed while decoding on CUDA (names of torch.nn.attention.SDPBackend); None lets
# torch choose. Torch prefers cuDNN attention on Hopper GPUs, and cuDNN plans its kernel per new
# shape: decoding makes a new one at every step (the key length grows, finished rows leave the batch).
# Measured on an H200 (`bench/generation.py`, 64 prompts x 128 tokens): 659 tokens/s with cuDNN,
# 1571 with the memory-efficient kernel that is chosen without it.
DECODING_SDPA_BACKENDS: tuple[str, ...] | None = ("FLASH_ATTENTION", "EFFICIENT_ATTENTION", "MATH")


@dataclass(frozen=True)
class SamplingParams:
    """How to sample: `max_new_tokens` per response (eos included); temperature 0 means greedy."""

    max_new_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    min_new_tokens: int = 0  # end-of-turn is forbidden before this many tokens (benchmarks force full length)

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be at least 1, got {self.max_new_tokens}")
        if self.temperature < 0 or not 0 < self.top_p <= 1:
            raise ValueError(f"temperature must be >= 0 and top_p in (0, 1], got {self.temperature}, {self.top_p}")


def native_bf16(device: torch.device) -> bool:
    """Whether bfloat16 matrix products run natively (and so about twice as fast as float32) here."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def resolve_mode(mode: str, device: torch.device) -> tuple[str, torch.dtype | None]:
    """("merged", dtype) or ("adapter", None) for a `model.generation` setting on `device`.

    "auto" merges into a bfloat16 copy where bfloat16 is native and decodes through the adapter
    otherwise: a float32 copy would cost a second copy of the weights for a few percent.
    """
    if mode not in GENERATION_MODES:
        raise ValueError(f"model.generation must be one of {', '.join(GENERATION_MODES)}, not {mode!r}")
    fast = native_bf16(device)
    if mode == "adapter" or (mode == "auto" and not fast):
        return "adapter", None
    return "merged", torch.bfloat16 if fast else torch.float32


def decoding_dtype(generation: str, precision: str, device: torch.device) -> torch.dtype:
    """The precision a workspace's loop decodes in on `device`, from `model.generation` and `model.precision`:
    the merged copy's dtype; through the adapter, the base's loaded dtype (bfloat16 on CUDA) or the passes'
    autocast (bfloat16 for "bf16", and for "auto" where native), else float32. `Sampler.decoding_dtype` is
    the same answer from a loaded stack."""
    mode, dtype = resolve_mode(generation, device)
    if mode == "merged":
        return dtype
    autocast = precision == "bf16" or (precision == "auto" and native_bf16(device))
    return torch.bfloat16 if autocast or default_dtype(device) == torch.bfloat16 else torch.float32


def dtype_name(dtype: torch.dtype) -> str:
    """"bfloat16", "float32": a dtype as configs and `--dtype` spell it."""
    return str(dtype).removeprefix("torch.")


def _dense(param: Tensor) -> Tensor:
    """A parameter as a dense tensor: a 4-bit bitsandbytes weight de-quantized (float32), others as they are."""
    if getattr(param, "quant_state", None) is not None:
        import bitsandbytes.functional as bnbf

        return bnbf.dequantize_4bit(param.data, param.quant_state).float()
    return param.detach()


def _dense_weight(layer: nn.Module) -> Tensor:
    """The weight of a (possibly 4-bit bitsandbytes) Linear as a dense float32 tensor [out, in]."""
    return _dense(layer.weight).float()


class _LowRankLinear(nn.Module):
    """A Linear with an adapter's low-rank term kept beside it: x·Wᵀ + s·(x·Aᵀ)·Bᵀ, as PEFT computes it.

    Merged into a bfloat16 W, a LoRA delta smaller than W's rounding step (most of a round's training is)
    rounds away: measured on a GRPO policy after 3 rounds, samples from the merged bfloat16 copy had 0.071
    nats/token of KL to the base where the policy had 0.091, so rollouts were drawn from a policy about a fifth
    of the way back to the base, and k1 estimates of the KL read low."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.linear = linear
        self.lora_a: Tensor | None = None  # [r, in]
        self.lora_b: Tensor | None = None  # [out, r], times the adapter's scaling s

    @property
    def weight(self) -> Tensor:
        return self.linear.weight

    def set_low_rank(self, a: Tensor | None, b_scaled: Tensor | None) -> None:
        """A [r, in] and s·B [out, r] in the copy's dtype, or None and None: the bare Linear."""
        self.lora_a, self.lora_b = a, b_scaled

    def forward(self, x: Tensor) -> Tensor:
        out = self.linear(x)
        if self.lora_a is None:
            return out
        flat = out.view(-1, out.shape[-1])
        flat.addmm_(x.reshape(-1, x.shape[-1]) @ self.lora_a.T, self.lora_b.T)  # B comes scaled by s
        return out


def _plain_lora(layer: LoraLayer, adapter: str) -> bool:
    """Whether `layer`'s `adapter` is the plain x·Aᵀ·Bᵀ·s term `_LowRankLinear` computes (not DoRA, no LoRA
    bias, not a transposed Conv1D weight); others are merged into the weight instead."""
    return (adapter in layer.lora_A and isinstance(layer.lora_A[adapter], nn.Linear)
            and isinstance(layer.lora_B[adapter], nn.Linear)
            and not getattr(layer, "use_dora", {}).get(adapter, False)
            and not getattr(layer, "lora_bias", {}).get(adapter, False)
            and not getattr(layer, "fan_in_fan_out", False))


class MergedCopy:
    """A plain copy of `peft_model`'s base for decoding in `dtype`, with one adapter: its low-rank terms beside
    the LoRA-targeted weights (`_LowRankLinear`), or merged into them where the layer is not plain LoRA.
    `low_rank=False` merges every layer: a plain transformers model, as an export writes it."""

    def __init__(self, peft_model: nn.Module, dtype: torch.dtype, *, low_rank: bool = True) -> None:
        self.peft_model = peft_model
        self.dtype = dtype
        self.low_rank = low_rank
        base = peft_model.get_base_model()
        self.device = next(base.parameters()).device
        with torch.device("meta"):
            self.model = type(base)(base.config)
        # Allocated in `dtype` at once: a float32 copy first would briefly hold a third model in memory.
        self.model.to(dtype).to_empty(device=self.device)
        self._lora_layers = {name: m for name, m in base.named_modules() if isinstance(m, LoraLayer)}
        own = dict(self.model.named_parameters())
        for name, param in base.named_parameters():
            if "lora_" in name or name.split(".base_layer.")[0] in self._lora_layers:
                continue
            own[name].data.copy_(_dense(param))  # a 4-bit layer outside the LoRA targets: de-quantized
        # Buffers (the rotary frequencies) keep the base's dtype: rounded to bfloat16, the angle of
        # position p drifts by about p * 2**-9 radians, which moves attention in long responses.
        own_modules = dict(self.model.named_modules())
        for name, buf in base.named_buffers():
            owner, _, attr = name.rpartition(".")
            if owner in own_modules and attr in own_modules[owner]._buffers:
                own_modules[owner]._buffers[attr] = buf.detach().clone()
        if getattr(base.config, "tie_word_embeddings", False):
            self.model.tie_weights()
        self.model.eval()
        self.model.requires_grad_(False)
        self.model.generation_config = base.generation_config
        for name in self._lora_layers if low_rank else ():
            parent, _, child = name.rpartition(".")
            owner = self.model.get_submodule(parent) if parent else self.model
            setattr(owner, child, _LowRankLinear(getattr(owner, child)))
        self._key: tuple | None = None

    def _fingerprint(self, adapter: str | None) -> tuple:
        if adapter is None:
            return (None,)
        return (adapter, *(p._version for m in self._lora_layers.values()
                           for p in (m.lora_A[adapter].weight, m.lora_B[adapter].weight)))

    @torch.no_grad()
    def sync(self, adapter: str | None) -> nn.Module:
        """The copy with base + `adapter` (None: the bare base) in its LoRA-targeted weights."""
        key = self._fingerprint(adapter)
        if key == self._key:
            return self.model
        own = dict(self.model.named_modules())
        for name, layer in self._lora_layers.items():
            weight = _dense_weight(layer.get_base_layer())
            side = self.low_rank and adapter is not None and _plain_lora(layer, adapter)
            if adapter is not None and not side:
                weight = weight + layer.get_delta_weight(adapter).float()
            own[name].weight.copy_(weight.to(self.dtype))
            if side:
                own[name].set_low_rank(layer.lora_A[adapter].weight.detach().to(self.dtype).clone(),
                                       (layer.lora_B[adapter].weight.detach().float()
                                        * float(layer.scaling[adapter])).to(self.dtype))
            elif self.low_rank:
                own[name].set_low_rank(None, None)
        self._key = key
        return self.model


@torch.no_grad()
def _pick(logits: Tensor, params: SamplingParams, generator: torch.Generator | None) -> Tensor:
    """Next token per row from [B, V] logits: greedy, or temperature then top-p sampling."""
    if params.temperature == 0:
        return logits.argmax(dim=-1)
    probs = torch.softmax(logits.float() / params.temperature, dim=-1)
    if params.top_p < 1.0:
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        # Keep the smallest prefix whose mass reaches top_p (the top token always stays).
        sorted_probs[(sorted_probs.cumsum(dim=-1) - sorted_probs) >= params.top_p] = 0.0
        choice = torch.multinomial(sorted_probs, 1, generator=generator)
        return order.gather(1, choice).squeeze(1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(1)


def decoder_and_head(model: nn.Module) -> tuple[nn.Module, nn.Module]:
    """(decoder, lm_head) of a causal LM, or of a PEFT model around one (the decoder's LoRA layers then
    apply the active adapter)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return getattr(base, base.base_model_prefix), base.lm_head


def _cache_keyword(decoder: nn.Module) -> str:
    """`cache` (transformers >= 5.2x) or `past_key_values` (earlier), whichever the decoder's forward takes."""
    return "cache" if "cache" in inspect.signature(decoder.forward).parameters else "past_key_values"


def decoding_attention(device: torch.device) -> contextlib.AbstractContextManager:
    """The attention-kernel choice for decoding on `device` (`DECODING_SDPA_BACKENDS`, on CUDA only)."""
    if device.type != "cuda" or DECODING_SDPA_BACKENDS is None:
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel([getattr(SDPBackend, name) for name in DECODING_SDPA_BACKENDS])


@torch.no_grad()
def decode(model: nn.Module, input_ids: Tensor, attention_mask: Tensor, params: SamplingParams, eos_id: int,
           generator: torch.Generator | None = None) -> list[list[int]]:
    """Sample one continuation per left-padded prompt row ([B, T] ids and mask on the model's device).

    Returns B lists of new token ids, each ending with `eos_id` or cut at `params.max_new_tokens`.
    A row leaves the batch (its KV-cache rows dropped) as soon as it has emitted eos.
    """
    with decoding_attention(input_ids.device):
        return _decode(model, input_ids, attention_mask, params, eos_id, generator)


def _decode(model: nn.Module, input_ids: Tensor, attention_mask: Tensor, params: SamplingParams, eos_id: int,
            generator: torch.Generator | None) -> list[list[int]]:
    n = input_ids.shape[0]
    cache = DynamicCache(config=model.config)
    decoder, head = decoder_and_head(model)
    cache_arg = _cache_keyword(decoder)

    def next_logits(ids: Tensor, mask: Tensor, positions: Tensor) -> Tensor:
        # The head on the last position's [B, H] states: a plain matmul. (The causal LM's own
        # `logits_to_keep=1` hands the head a strided [B, 1, H] slice, which torch multiplies as a
        # batched matmul against a copy of the head's weight per row: seconds and GBs per prefill.)
        hidden = decoder(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True,
                         **{cache_arg: cache}).last_hidden_state
        return head(hidden[:, -1])

    positions = (attention_mask.long().cumsum(dim=-1) - 1).clamp(min=0)
    logits = next_logits(input_ids, attention_mask, positions)
    alive = list(range(n))  # the prompt row of each batch row
    last = positions[:, -1]
    out: list[list[int]] = [[] for _ in range(n)]
    for step in range(params.max_new_tokens):
        if step < params.min_new_tokens:
            logits[:, eos_id] = float("-inf")
        tokens = _pick(logits, params, generator)
        picked = tokens.tolist()  # the step's one wait for the device
        for row, token in zip(alive, picked, strict=True):
            out[row].append(token)
        if step == params.max_new_tokens - 1:
            break
        keep = [i for i, token in enumerate(picked) if token != eos_id]
        if not keep:
            break
        if len(keep) < len(picked):
            index = torch.tensor(keep, device=tokens.device)
            cache.batch_select_indices(index)
            attention_mask, last, tokens = attention_mask[index], last[index], tokens[index]
            alive = [alive[i] for i in keep]
        attention_mask = torch.cat([attention_mask, attention_mask.new_ones(attention_mask.shape[0], 1)], dim=1)
        last = last + 1
        logits = next_logits(tokens[:, None], attention_mask, last[:, None])
    return out


def length_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Row indices grouped into batches of similar length (longest first), so padding stays small."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    return [order[i:i + batch_size] for i in range(0, len(order), max(1, batch_size))]


class Sampler:
    """`ModelStack.sample`: a mixin that expects `model`, `tokenizer`, `device`, `use`, `_autocast`, the
    decoding settings `generation_mode` / `generation_dtype`, `autocast_dtype`, `keep_generation_copy` and
    `_merged`."""

    @property
    def decoding_dtype(self) -> torch.dtype:
        """The precision `sample` decodes in: the merged copy's dtype, else the passes' autocast dtype or
        the base's own (bfloat16 where it was loaded so, as on CUDA)."""
        if self.generation_mode == "merged":
            return self.generation_dtype
        return self.autocast_dtype or self.model.get_input_embeddings().weight.dtype

    @torch.no_grad()
    def sample(self, prompts: list[list[int]], params: SamplingParams, *, adapter: str | None = "policy",
               batch_size: int = 32, generator: torch.Generator | None = None,
               on_batch: Callable[[int], None] | None = None) -> list[list[int]]:
        """One sampled continuation per prompt (token ids), through `adapter` (None = the bare base).

        Prompts are decoded in batches of similar length; each result ends with eos or is cut at
        `params.max_new_tokens`. Uses the merged decoding copy or the adapter per `generation_mode`.
        `on_batch` is called with the number of prompts each finished batch held (progress bars).
        """
        if adapter is not None and adapter not in self.model.peft_config:
            known = ", ".join(self.model.peft_config)
            raise ValueError(f"unknown adapter {adapter!r}; expected one of {known} or None")
        eos, pad = self.tokenizer.eos_token_id, self.tokenizer.pad_token_id
        out: list[list[int]] = [[] for _ in prompts]
        was_training = self.model.training
        self.model.eval()
        try:
            for rows in length_batches([len(p) for p in prompts], batch_size):
                ids, mask = left_pad([prompts[i] for i in rows], pad)
                ids, mask = ids.to(self.device), mask.to(self.device)
                for i, tokens in zip(rows, self._decode_batch(ids, mask, params, adapter, eos, generator)):
                    out[i] = tokens
                if on_batch is not None:
                    on_batch(len(rows))
        finally:
            self.model.train(was_training)
            if not self.keep_generation_copy:
                self._merged = None
        return out

    def _decode_batch(self, ids: Tensor, mask: Tensor, params: SamplingParams, adapter: str | None, eos: int,
                      generator: torch.Generator | None) -> list[list[int]]:
        if self.generation_mode == "merged":
            if self._merged is None:
                self._merged = MergedCopy(self.model, self.generation_dtype)
            return decode(self._merged.sync(adapter), ids, mask, params, eos, generator)
        with self._autocast():  # the training passes' precision (the base's LoRA layers may be stored in it)
            if adapter is None:
                with self.model.disable_adapter():  # the bare base, whatever the KL reference is
                    return decode(self.model, ids, mask, params, eos, generator)
            with self.use(adapter):
                return decode(self.model, ids, mask, params, eos, generator)
