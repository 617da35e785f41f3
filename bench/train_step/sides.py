"""How each side of the training-step benchmark runs: ours (`ModelStack`, one base with the policy, value and
reward adapters) and the baselines (plain Transformers models under TRL), with the same LoRA, precision and
activation checkpointing. Imported only by worker processes (it imports torch)."""

from __future__ import annotations

from pathlib import Path

import torch

from bench.train_step.settings import LORA_TARGETS, BenchSettings
from rlhf_core.models.loading import default_dtype
from rlhf_core.models.stack import LoraSettings, ModelStack


def dtype_of(s: BenchSettings) -> torch.dtype:
    return default_dtype(torch.device(s.device))


def lora_of(s: BenchSettings) -> LoraSettings:
    # Dropout 0 on both sides: TRL's reward trainer switches dropout off anyway (disable_dropout).
    return LoraSettings(r=s.lora_r, alpha=s.lora_alpha, dropout=0.0)


def peft_config(s: BenchSettings, task_type: str):
    """The same LoRA as `lora_of`, for TRL: "SEQ_CLS" also trains the reward head, "CAUSAL_LM" the policy."""
    from peft import LoraConfig

    return LoraConfig(r=s.lora_r, lora_alpha=s.lora_alpha, lora_dropout=0.0, target_modules=list(LORA_TARGETS),
                      bias="none", task_type=task_type)


def ours_checkpointing(s: BenchSettings) -> bool | str:
    return {"defaults": "auto", "on": True, "off": False}[s.checkpointing]


def trl_checkpointing(s: BenchSettings) -> bool:
    return s.checkpointing != "off"  # TRL's own default is on


def trl_bf16(s: BenchSettings) -> bool:
    """TRL's `bf16` flag: its default (True) where bf16 is native, else float32 like ours."""
    from rlhf_core.models.generation import native_bf16

    return s.autocast == "auto" and native_bf16(torch.device(s.device)) or dtype_of(s) == torch.bfloat16


def load_stack(s: BenchSettings) -> ModelStack:
    """Ours: one base with the `policy`, `value` and `reward` adapters, as the product loads it."""
    stack = ModelStack.load(Path(s.model_dir), quantize_4bit=s.quantize_4bit, device=s.device, policy_lora=lora_of(s),
                            reward_lora=lora_of(s), gradient_checkpointing=ours_checkpointing(s), seed=s.seed,
                            generation=s.generation, precision="auto" if s.autocast == "auto" else "fp32")
    stack.keep_generation_copy = not s.release_cpu_memory  # as `model.release_cpu_memory` does
    return stack


def load_hf(s: BenchSettings, model_class):
    """A plain Transformers model for the baselines, in the same dtype / 4-bit format as ours."""
    kwargs = {"dtype": dtype_of(s)}
    if s.quantize_4bit:
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=dtype_of(s),
            bnb_4bit_use_double_quant=True)
        kwargs["device_map"] = {"": s.device}
    if model_class.__name__.endswith("SequenceClassification"):
        kwargs["num_labels"] = 1
    model = model_class.from_pretrained(s.model_dir, **kwargs)
    return model if s.quantize_4bit else model.to(s.device)


def synchronize(device: str) -> None:
    """Wait for the device's queued work, so a time stamp or memory reading covers it."""
    if device == "cuda":
        torch.cuda.synchronize()
