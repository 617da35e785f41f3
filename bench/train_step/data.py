"""The synthetic data both sides of the training-step benchmark train on (preference pairs and chat prompts
over a small vocabulary, deterministic per seed) and the GRPO reward both use (response length)."""

from __future__ import annotations

import random

from rlhf_core.training.reward_data import PreferenceExample

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
