"""A tiny random Llama + ChatML tokenizer built locally, for tests and smoke runs.

Shapes mirror SmolLM2 in kind (Llama, grouped-query attention, tied embeddings,
pad token == eos token) so code exercised here behaves the same on the real model.
Nothing is downloaded: the byte-level BPE is trained on text generated below.
"""

from __future__ import annotations

import random
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

# Same form as SmolLM2's template, minus its default system message.
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

TINY_VOCAB_SIZE = 512  # a multiple of 64 keeps the (tied) embedding friendly to 4-bit kernels

_SUBJECTS = [
    "the model",
    "a user",
    "the assistant",
    "my friend",
    "the teacher",
    "a small cat",
    "the reward",
    "this answer",
    "the system",
    "our team",
    "a student",
    "the river",
]
_VERBS = [
    "writes",
    "reads",
    "explains",
    "prefers",
    "likes",
    "answers",
    "compares",
    "learns",
    "helps",
    "finds",
    "asks about",
    "remembers",
]
_OBJECTS = [
    "a short poem",
    "the question",
    "two responses",
    "the better reply",
    "a kind story",
    "the math problem",
    "some good advice",
    "a list of ideas",
    "the weather today",
    "the capital of France",
    "an honest answer",
    "a helpful summary",
]
_TAILS = [
    "",
    " today",
    " again",
    " very carefully",
    " with care",
    " in simple words",
    " because it is useful",
    " and then stops",
    " for everyone",
    " quickly",
]
_QUESTIONS = [
    "What is two plus two?",
    "Can you help me?",
    "Why is the sky blue?",
    "How do I write a poem?",
    "Which answer is better?",
    "Tell me a story.",
    "What is the capital of France?",
    "Please explain this.",
    "Is it raining?",
]


def _training_text(rng: random.Random, n_lines: int = 400) -> list[str]:
    """English-like lines plus ChatML role words, so common chat strings get merged tokens."""
    lines = []
    for _ in range(n_lines):
        if rng.random() < 0.3:
            lines.append(rng.choice(["user", "assistant", "system"]) + "\n" + rng.choice(_QUESTIONS))
        else:
            lines.append(
                f"{rng.choice(_SUBJECTS).capitalize()} {rng.choice(_VERBS)} {rng.choice(_OBJECTS)}{rng.choice(_TAILS)}."
            )
    return lines


def build_tiny_tokenizer(*, seed: int = 0) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE (vocab TINY_VOCAB_SIZE) and wrap it as a ChatML HF tokenizer."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=TINY_VOCAB_SIZE,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_training_text(random.Random(seed)), trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|im_end|>",  # pad == eos on purpose, as in SmolLM2
        unk_token="<|endoftext|>",
        chat_template=CHATML_TEMPLATE,
        padding_side="left",
        model_max_length=2048,
    )


def build_tiny_model(out_dir: Path, *, seed: int = 0) -> Path:
    """Write a random tiny LlamaForCausalLM (hidden 64, 2 layers) and its tokenizer to `out_dir`.

    Deterministic given `seed`; takes well under a second. Returns `out_dir`.
    """
    out_dir = Path(out_dir)
    tokenizer = build_tiny_tokenizer(seed=seed)
    eos_id = tokenizer.convert_tokens_to_ids("<|im_end|>")
    bos_id = tokenizer.convert_tokens_to_ids("<|im_start|>")
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        bos_token_id=bos_id,
        eos_token_id=eos_id,
        pad_token_id=eos_id,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(bos_token_id=bos_id, eos_token_id=eos_id, pad_token_id=eos_id)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir
