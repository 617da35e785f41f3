"""Shared pieces of `bench/train_step.py`'s workers: the LoRA both sides use, the synthetic data, the
length reward, how each side loads the model, and memory readings. Imported only by worker processes."""

from __future__ import annotations

import random
import resource
from pathlib import Path

import torch
from _train_step_settings import LORA_TARGETS, BenchSettings

from rlhf_core.models.loading import default_dtype
from rlhf_core.models.stack import LoraSettings, ModelStack
from rlhf_core.training.reward_data import PreferenceExample


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


# --------------------------------------------------------------------------- synthetic data

WORDS = (
    "apple river bright quiet garden music window yellow simple careful answer question teacher student "
    "morning evening ocean mountain little kind honest useful story poem number engine travel friend paper "
    "summer winter market letter forest silver golden gentle rapid clear warm cold happy calm strong"
).split()
QUESTIONS = (
    "What is a good way to start the day?", "Can you describe a quiet garden?", "Write a short poem about rain.",
    "How do I explain fractions to a child?", "Why is the ocean salty?", "Give me three tips for travelling.",
    "What makes a good friend?", "Describe a mountain in winter.", "How should I write a thank-you letter?",
    "What is your favourite kind of music?", "Tell me a story about a little engine.", "How do plants grow?",
    "What is the best way to learn a language?", "Summarise the idea of kindness.", "How do I stay calm?",
    "Describe a market on a summer morning.",
)


def _sentence(rng: random.Random, n_words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n_words)).capitalize() + "."


def preference_pairs(n: int = 64, seed: int = 0) -> list[PreferenceExample]:
    """`n` deterministic (chosen, rejected) pairs over the chat questions; responses of 20-40 words."""
    rng = random.Random(seed)
    pairs = []
    for i in range(n):
        question = QUESTIONS[i % len(QUESTIONS)]
        pairs.append(PreferenceExample(
            prompt_messages=[{"role": "user", "content": question}],
            chosen=_sentence(rng, rng.randint(20, 40)), rejected=_sentence(rng, rng.randint(20, 40)),
            strength=None, prompt_id=i % len(QUESTIONS)))
    return pairs


def chat_prompts(n: int = 64, seed: int = 0) -> list[list[dict[str, str]]]:
    """`n` single-turn conversations: a question, sometimes with a word list to use."""
    rng = random.Random(seed + 1)
    prompts = []
    for i in range(n):
        question = QUESTIONS[i % len(QUESTIONS)]
        if i >= len(QUESTIONS):
            question += " Use the words " + ", ".join(rng.sample(WORDS, 3)) + "."
        prompts.append([{"role": "user", "content": question}])
    return prompts


def length_score(text: str) -> float:
    """The GRPO reward on both sides: response length in hundreds of characters (no reward-model forward)."""
    return len(text) / 100.0


def completion_text(completion) -> str:
    """TRL passes a conversational completion as [{"role": "assistant", "content": ...}]."""
    if isinstance(completion, list):
        return "".join(m.get("content", "") for m in completion)
    return str(completion)


# --------------------------------------------------------------------------- models


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


# --------------------------------------------------------------------------- measuring


def synchronize(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def current_rss_mb() -> float:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")
