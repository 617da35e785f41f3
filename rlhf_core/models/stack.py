"""One frozen base model carrying named LoRA adapters (`policy`, `value`, `reward`) and scalar heads.

The reference policy is the base with adapters disabled, or, when configured, a frozen copy of an
earlier policy adapter (adapter `reference`); never a second copy of the weights, so PPO needs one
model in memory instead of four (policy, reference, critic, reward model).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
from peft import LoraConfig, get_peft_model
from peft.tuners.tuners_utils import BaseTunerLayer
from torch import Tensor, nn

from rlhf_core.algorithms.head_logprobs import linear_kl, linear_logprobs
from rlhf_core.models.adapter_files import AdapterFiles
from rlhf_core.models.batching import first_response_column
from rlhf_core.models.generation import MergedCopy, Sampler, decoder_and_head, native_bf16, resolve_mode
from rlhf_core.models.loading import load_causal_lm, load_tokenizer, pick_device, prepare_for_autocast
from rlhf_core.models.process_reward import PRM, ProcessRewardScoring
from rlhf_core.models.reward_head import RewardHead, RewardScoring

ADAPTERS = ("policy", "value", "reward")
REFERENCE = "reference"  # the optional frozen earlier policy adapter
# Activation checkpointing "auto": batches with fewer tokens keep their activations. At 2,400 tokens a
# reward-model step of SmolLM2-135M (bfloat16 autocast, CPU) was 20% faster without checkpointing and its
# peak memory grew by 3% (1.72 -> 1.77 GiB), so recomputation only pays for big batches.
CHECKPOINT_MIN_TOKENS = 8192
PRECISIONS = ("auto", "bf16", "fp32")
# Training forwards on CPU attend by plain matmul + softmax ("eager") while batch x length^2 stays below this:
# torch's CPU flash-attention backward took a fifth of a reward-model step (SmolLM2-135M, 8 packed pairs of
# ~120 tokens: 1.32 s/step with sdpa, 1.12 s eager). Eager keeps each layer's [B, heads, T, T] probabilities
# for backward, so longer batches stay with sdpa (at the limit, ~0.3 GB more for this model).
EAGER_ATTENTION_MAX = 2**18
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class LoraSettings:
    r: int = 16
    alpha: int = 32
    dropout: float = 0.0

    def peft_config(self) -> LoraConfig:
        return LoraConfig(r=self.r, lora_alpha=self.alpha, lora_dropout=self.dropout,
                          target_modules=list(LORA_TARGETS), bias="none", task_type="CAUSAL_LM")


class ModelStack(AdapterFiles, RewardScoring, ProcessRewardScoring, Sampler):
    """The frozen base + adapters + heads. Use `with stack.use("policy"):` to pick an adapter."""

    def __init__(self, model: nn.Module, tokenizer, model_dir: Path, quantized: bool,
                 loras: dict[str, LoraSettings], generation: str = "adapter", precision: str = "fp32") -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.model_dir = model_dir
        self.quantized = quantized
        self.loras = loras
        self.device = next(model.parameters()).device
        self.generation_mode, self.generation_dtype = resolve_mode(generation, self.device)
        self._merged: MergedCopy | None = None
        # False: the merged decoding copy is dropped after each `sample` call (memory-lean mode; the
        # next call rebuilds it, a fraction of a second for a small model).
        self.keep_generation_copy = True
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
        bf16 = precision == "bf16" or (precision == "auto" and native_bf16(self.device))
        # Passes run under bfloat16 autocast (LoRA weights, heads and losses stay float32; the frozen base
        # weights under LoRA are stored in bfloat16: autocast's own rounding, once instead of per pass).
        self.autocast_dtype: torch.dtype | None = torch.bfloat16 if bf16 else None
        if bf16:
            prepare_for_autocast(model, torch.bfloat16)
        self._checkpoint_modules: list[nn.Module] = []
        self.checkpoint_min_tokens: int | None = None  # None: never checkpoint; 0: always
        self._checkpointing_on = False
        hidden = model.get_base_model().config.hidden_size
        self.heads = nn.ModuleDict({"value": nn.Linear(hidden, 1), "reward": RewardHead(hidden, 1, init=False)})
        self.heads.to(self.device, torch.float32)
        for head in self.heads.values():
            nn.init.normal_(head.weight, std=1.0 / (hidden + 1) ** 0.5)
            nn.init.zeros_(head.bias)
        self._lora_params = [p for n, p in model.named_parameters() if "lora_" in n]
        self.reference_path: Path | None = None
        self._reference_params: list[nn.Parameter] = []
        self.freeze_adapters()
        self._initial = {name: self._adapter_state(name) for name in ADAPTERS}
        self._initial_heads = {name: {k: v.detach().clone() for k, v in head.state_dict().items()}
                               for name, head in self.heads.items()}

    @classmethod
    def load(cls, model_dir: Path, *, quantize_4bit: bool = False, device: str | torch.device = "auto",
             policy_lora: LoraSettings = LoraSettings(), reward_lora: LoraSettings = LoraSettings(),
             gradient_checkpointing: bool | str = True, seed: int = 0, generation: str = "adapter",
             precision: str = "fp32") -> ModelStack:
        """Load the base once and attach the three adapters (freshly initialised: identity for the policy).

        gradient_checkpointing: True (every training forward), False, or "auto" (batches of at least
        CHECKPOINT_MIN_TOKENS tokens). generation: see `models.generation.resolve_mode`. precision:
        "fp32", "bf16" (autocast) or "auto" (bf16 where native: CUDA, AVX512-BF16/AMX CPUs). The
        defaults here are the exact ones (tests); a workspace's `rlhf.toml` picks the fast ones.
        """
        device = pick_device(device) if isinstance(device, str) else device
        torch.manual_seed(seed)
        base = load_causal_lm(Path(model_dir), quantize_4bit=quantize_4bit, device=device)
        for p in base.parameters():
            p.requires_grad_(False)
        for module in base.modules():
            # On CPUs with AVX512-BF16, bitsandbytes repacks a 4-bit weight for an inference-only
            # kernel on its first eval-mode forward without grad (e.g. generation). That kernel has
            # no backward, so LoRA weights below it would silently get wrong gradients ever after.
            if hasattr(module, "support_avx512bf16_for_cpu"):
                module.support_avx512bf16_for_cpu = False
        base.config.use_cache = False
        loras = {"policy": policy_lora, "value": policy_lora, "reward": reward_lora}
        model = get_peft_model(base, loras["policy"].peft_config(), adapter_name="policy")
        for name in ("value", "reward"):
            model.add_adapter(name, loras[name].peft_config())
        model.set_adapter("policy")
        stack = cls(model, load_tokenizer(Path(model_dir)), Path(model_dir), quantize_4bit, loras, generation,
                    precision)
        if gradient_checkpointing:
            stack._enable_checkpointing(base)
            stack.checkpoint_min_tokens = CHECKPOINT_MIN_TOKENS if gradient_checkpointing == "auto" else 0
        return stack

    def _enable_checkpointing(self, base: nn.Module) -> None:
        """Activation checkpointing whose recomputation runs through the adapter of the original forward.

        Backward may run after `use(name)` has switched back to another adapter; without this, the
        recomputed activations would come from the wrong adapter (an error at best, wrong
        gradients at worst).
        """
        def context_fn():  # called at forward time: remember which adapter (or none) is active
            adapter = self.model.active_adapter
            disabled = self._adapters_disabled()
            return nullcontext(), self._recompute_as(adapter, disabled)

        kwargs = {"use_reentrant": False, "context_fn": context_fn}
        # transformers 5 renamed gradient checkpointing to activation checkpointing.
        if hasattr(base, "activation_checkpointing_enable"):
            base.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
        else:
            base.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
        self._checkpoint_modules = [m for m in base.modules() if getattr(m, "gradient_checkpointing", False)]
        self._checkpointing_on = True

    def _checkpoint_for(self, tokens: int) -> None:
        """Checkpoint this forward's activations or not, by its size (flags on the decoder layers)."""
        on = self.checkpoint_min_tokens is not None and tokens >= self.checkpoint_min_tokens
        if on != self._checkpointing_on:
            for module in self._checkpoint_modules:
                module.gradient_checkpointing = on
            self._checkpointing_on = on

    def _autocast(self):  # noqa: ANN202 - a context manager
        if self.autocast_dtype is None:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    def _adapters_disabled(self) -> bool:
        layer = next((m for m in self.model.modules() if isinstance(m, BaseTunerLayer)), None)
        return bool(layer is not None and layer.disable_adapters)

    @contextmanager
    def _recompute_as(self, adapter: str, disabled: bool) -> Iterator[None]:
        # Switching adapters walks every LoRA layer; skip it when the state already matches
        # (the usual case: backward runs inside the same `use(...)` as the forward).
        if disabled == self._adapters_disabled() and (disabled or self.model.active_adapter == adapter):
            yield
        elif disabled:
            with self.reference():
                yield
        else:
            with self.use(adapter):
                yield

    # -- adapter selection -----------------------------------------------------------
    @contextmanager
    def use(self, name: str) -> Iterator[None]:
        """Run the enclosed forward passes through adapter `name`."""
        if name not in ADAPTERS and not (name == REFERENCE and self.reference_path is not None) and not (
                name == PRM and self.has_prm):  # the process reward model's, once `enable_prm` added it
            raise ValueError(f"unknown adapter {name!r}; expected one of {ADAPTERS}")
        previous = self.model.active_adapter
        if previous == name:  # nested use of the active adapter: nothing to switch
            yield
            return
        self._switch(name)
        try:
            yield
        finally:
            self._switch(previous)

    def _switch(self, name: str) -> None:
        # peft's set_adapter also flips requires_grad; autograd then drops the gradients of a
        # forward pass that ran before the switch back. Which weights train is our choice alone.
        flags = [(p, p.requires_grad) for p in self._lora_params]
        self.model.set_adapter(name)
        for p, flag in flags:
            p.requires_grad_(flag)
        for p in self._reference_params:  # frozen for good
            p.requires_grad_(False)

    @contextmanager
    def reference(self) -> Iterator[None]:
        """The reference policy: the base model with every adapter disabled, or the frozen policy
        adapter set with `set_reference`."""
        if self.reference_path is not None:
            with self.use(REFERENCE):
                yield
        else:
            with self.model.disable_adapter():
                yield

    def set_reference(self, directory: Path | None) -> None:
        """Make the policy adapter saved in `directory` the (frozen) reference; None: the base model."""
        if directory is None:
            self.reference_path = None
            return
        if REFERENCE not in self.model.peft_config:
            active = self.model.active_adapter
            flags = [(p, p.requires_grad) for p in self._lora_params]
            self.model.add_adapter(REFERENCE, self.loras["policy"].peft_config())
            self.model.set_adapter(active)
            for p, flag in flags:
                p.requires_grad_(flag)
            self._reference_params = [p for n, p in self.model.named_parameters() if f".{REFERENCE}." in n]
            for p in self._reference_params:
                p.requires_grad_(False)
        self.reference_path = Path(directory)
        self.load_adapter(REFERENCE, self.reference_path)

    def freeze_adapters(self) -> None:
        """No adapter or head trains until `trainable_parameters` names it (no graphs built meanwhile)."""
        for p in [*self._lora_params, *self.heads.parameters()]:
            p.requires_grad_(False)

    def trainable_parameters(self, name: str) -> list[nn.Parameter]:
        """The LoRA weights of adapter `name` (and its head, if any), made trainable."""
        params = [p for n, p in self.model.named_parameters() if f".{name}." in n and "lora_" in n]
        for p in params:
            p.requires_grad_(True)
        if name in self.heads:
            head = list(self.heads[name].parameters())
            for p in head:
                p.requires_grad_(True)
            params += head
        return params

    # -- forward passes --------------------------------------------------------------
    def _decoder(self) -> nn.Module:
        return decoder_and_head(self.model)[0]

    def hidden_states(self, input_ids: Tensor, attention_mask: Tensor, position_ids: Tensor | None = None,
                      layers: list[int] | None = None) -> Tensor | list[Tensor]:
        """Last-layer hidden states through the active adapter: [B, T] -> [B, T, H] (bfloat16 under autocast);
        with `layers`, a list of the states after each of those layers (0 = the embeddings; the last
        layer's is the normalized output, as without `layers`).

        attention_mask: [B, T] (1 = real token, causal attention), or a [B, 1, T, T] boolean mask of
        which tokens each token may see (packed sequences, with their `position_ids` [B, T]).
        """
        self._checkpoint_for(input_ids.numel())
        last_only = layers is None or layers == [self.model.get_base_model().config.num_hidden_layers]
        with self._attention_for(input_ids, attention_mask) as attention_mask, self._autocast():
            out = self._decoder()(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                                  use_cache=False, output_hidden_states=not last_only)
        if layers is None:
            return out.last_hidden_state
        return [out.last_hidden_state] if last_only else [out.hidden_states[i] for i in layers]

    @contextmanager
    def _attention_for(self, input_ids: Tensor, attention_mask: Tensor) -> Iterator[Tensor]:
        """Eager attention for this forward where it is faster (see EAGER_ATTENTION_MAX), else the model's
        own; yields the mask in the form the kernel wants (eager adds a 4D mask, so a boolean one becomes
        0 / most-negative). Not with checkpointing: its recomputation must run the same kernel."""
        b, t = input_ids.shape
        config = self.model.get_base_model().config
        if not (self.device.type == "cpu" and torch.is_grad_enabled() and not self._checkpointing_on
                and config._attn_implementation == "sdpa" and b * t * t <= EAGER_ATTENTION_MAX):
            yield attention_mask
            return
        if attention_mask.dim() == 4 and attention_mask.dtype == torch.bool:
            attention_mask = torch.zeros(attention_mask.shape, device=attention_mask.device).masked_fill_(
                ~attention_mask, torch.finfo(torch.float32).min)
        config._attn_implementation = "eager"
        try:
            yield attention_mask
        finally:
            config._attn_implementation = "sdpa"

    def token_logprobs(self, input_ids: Tensor, attention_mask: Tensor, *, with_entropy: bool = False,
                       response_mask: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """Log-probs of tokens 1..T-1 given their prefixes: [B, T] -> [B, T-1] (nats); entropy likewise.

        With `response_mask` ([B, T-1]), the LM head (vocabulary-sized, the largest matmul of a small
        model) projects only the columns from the first response token on; earlier columns are 0.
        """
        logp, entropy, _ = self.token_logprobs_and_states(input_ids, attention_mask, with_entropy=with_entropy,
                                                          response_mask=response_mask)
        return logp, entropy

    def token_logprobs_and_states(self, input_ids: Tensor, attention_mask: Tensor, *, with_entropy: bool = False,
                                  response_mask: Tensor | None = None) -> tuple[Tensor, Tensor | None, Tensor]:
        """`token_logprobs`, plus the hidden states [B, T-1, H] before each token (the LM head read those from
        the first response column on), for `token_kl` between two adapters at the response positions."""
        hidden = self.hidden_states(input_ids, attention_mask)[:, :-1]
        start = first_response_column(response_mask) if response_mask is not None else 0
        logp, entropy = self._head_logprobs(hidden[:, start:], input_ids[:, start + 1:], with_entropy=with_entropy)
        if start:
            logp = nn.functional.pad(logp, (start, 0))
            entropy = nn.functional.pad(entropy, (start, 0)) if entropy is not None else None
        return logp, entropy, hidden

    @torch.no_grad()
    def token_kl(self, hidden: Tensor, ref_hidden: Tensor) -> Tensor:
        """Exact KL(policy ‖ reference) over the vocabulary at each position [...], from hidden states [..., H]
        that `token_logprobs_and_states` returned under each (the LM head is shared: LoRA leaves it frozen)."""
        head = self.model.get_base_model().lm_head
        return linear_kl(hidden, ref_hidden, head.weight, bias=head.bias, compute_dtype=self.autocast_dtype)

    def _head_logprobs(self, hidden: Tensor, tokens: Tensor, *, with_entropy: bool = False
                       ) -> tuple[Tensor, Tensor | None]:
        """Log-probs of `tokens` [...] from the hidden states [..., H] before them, through the LM head in
        vocabulary chunks (never the [..., V] logits; see algorithms.head_logprobs), in autocast's dtype."""
        head = self.model.get_base_model().lm_head
        return linear_logprobs(hidden, head.weight, tokens, bias=head.bias, compute_dtype=self.autocast_dtype,
                               with_entropy=with_entropy)

    def scalar_head(self, name: str, hidden: Tensor) -> Tensor:
        return self.heads[name](hidden.float()).squeeze(-1)

    def packed_response_logprobs(self, packed) -> Tensor:  # noqa: ANN001 - training.reward_data.PackedResponses
        """Whole-response log-probs [B, S] (nats) of the responses packed behind their prompt, through the active
        adapter: each as its own prompt + response sequence would give (an empty slot: 0); head on responses only."""
        hidden = self.hidden_states(packed.input_ids, packed.attention_mask, packed.position_ids)
        rows, slots, cols = packed.response_masks.nonzero(as_tuple=True)  # every response token, once
        logp, _ = self._head_logprobs(hidden[rows, packed.predictors()[rows, cols]], packed.input_ids[rows, cols])
        n, s = packed.response_masks.shape[:2]
        return torch.zeros(n * s, device=logp.device).index_add(0, rows * s + slots, logp).view(n, s)

    def values(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """Critic value of each prefix, aligned with `token_logprobs`: [B, T] -> [B, T-1]."""
        with self.use("value"):
            hidden = self.hidden_states(input_ids, attention_mask)[:, :-1]
        return self.scalar_head("value", hidden)
