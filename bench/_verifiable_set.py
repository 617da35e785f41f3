"""Writes the verifiable prompt set shipped in the package (rlhf_core/data/verifiable_prompts.jsonl and
verifiable_eval_prompts.jsonl): short arithmetic and format-following tasks, each with its `answer` column and its
`task` kind, drawn from a seeded generator, the eval prompts disjoint from the train ones.

    python bench/_verifiable_set.py          # rewrites both files (the same bytes for the same seed)

The task kinds were chosen so that the default model (SmolLM2-135M-Instruct) answers between 10% and 60% of them
right when greedy (`python bench/verifiable.py --base-only` measures it; docs/results.md has the figure).
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path

DATA = Path(__file__).resolve().parents[1] / "rlhf_core" / "data"
WORDS = ("apple", "river", "green", "stone", "cloud", "tiger", "piano", "lemon", "chair", "ocean", "candle", "forest",
         "window", "garden", "silver", "rocket", "pencil", "castle", "bridge", "planet", "orange", "button", "mirror",
         "basket", "dragon", "winter", "summer", "jacket", "rabbit", "guitar", "pepper", "marble", "anchor", "violin",
         "saddle", "meadow", "copper", "falcon", "harbor", "island", "jungle", "kettle", "ladder", "magnet", "napkin",
         "oyster", "parrot", "quiver", "ribbon", "tunnel", "velvet", "walnut", "yellow", "zipper", "banana", "cactus",
         "donkey", "engine", "flower", "hammer")
NUMBER_ONLY = "Reply with the number only."


def add(rng: random.Random) -> tuple[str, object]:
    a, b = rng.randint(2, 20), rng.randint(2, 20)
    return f"What is {a} + {b}? {NUMBER_ONLY}", a + b


def subtract(rng: random.Random) -> tuple[str, object]:
    a, b = sorted((rng.randint(2, 20), rng.randint(2, 20)), reverse=True)
    return f"What is {a} - {b}? {NUMBER_ONLY}", a - b


def multiply(rng: random.Random) -> tuple[str, object]:
    a, b = rng.randint(3, 9), rng.randint(12, 25)
    return f"What is {a} times {b}? {NUMBER_ONLY}", a * b


def larger(rng: random.Random) -> tuple[str, object]:
    a, b = rng.sample(range(2, 60), 2)
    return f"Which is larger, {a} or {b}? {NUMBER_ONLY}", max(a, b)


def next_number(rng: random.Random) -> tuple[str, object]:
    n = rng.randint(3, 90)
    return f"What number comes right after {n}? {NUMBER_ONLY}", n + 1


def repeat_word(rng: random.Random) -> tuple[str, object]:
    word = rng.choice(WORDS)
    return f'Reply with only the word "{word}" and nothing else.', word


def first_letter(rng: random.Random) -> tuple[str, object]:
    word = rng.choice(WORDS)
    return f'What is the first letter of the word "{word}"? Reply with the letter only.', word[0]


def count_items(rng: random.Random) -> tuple[str, object]:
    items = rng.sample(WORDS, rng.randint(2, 5))
    return f"How many words are in this list: {', '.join(items)}? {NUMBER_ONLY}", len(items)


TASKS: dict[str, Callable[[random.Random], tuple[str, object]]] = {
    "add": add, "subtract": subtract, "multiply": multiply, "larger": larger, "next_number": next_number,
    "repeat_word": repeat_word, "first_letter": first_letter, "count_items": count_items,
}


def build(seed: int = 40, train_per_task: int = 24, eval_per_task: int = 8) -> tuple[list[dict], list[dict]]:
    """(train rows, eval rows): each task kind in turn, no prompt twice, eval prompts not among the train ones."""
    rng = random.Random(seed)
    seen: set[str] = set()
    rows: dict[str, list[dict]] = {"train": [], "eval": []}
    for split, per_task in (("eval", eval_per_task), ("train", train_per_task)):
        for task, make in TASKS.items():
            made = tries = 0
            while made < per_task:
                tries += 1
                if tries > 100 * per_task:
                    raise RuntimeError(f"task {task}: fewer than {per_task} distinct prompts left")
                prompt, answer = make(rng)
                if prompt in seen:
                    continue
                seen.add(prompt)
                rows[split].append({"prompt": prompt, "answer": answer, "task": task})
                made += 1
    return rows["train"], rows["eval"]


def main() -> None:
    train, evaluation = build()
    for name, rows in (("verifiable_prompts.jsonl", train), ("verifiable_eval_prompts.jsonl", evaluation)):
        (DATA / name).write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        print(f"wrote {len(rows)} prompts to {DATA / name}")


if __name__ == "__main__":
    main()
