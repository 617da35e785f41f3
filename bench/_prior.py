"""A simulated "existing preference dataset" for bench/reward_learning.py --prior N: pairs of base-model responses
on prompts the human judgments never see, each labelled by the same gold preference with the same noise (the
label flipped with probability `noise`), as `rlhf preferences import` would store them."""

from __future__ import annotations

import json
import random
from itertools import combinations
from pathlib import Path

from rlhf_core.loop.sampling import generate_responses
from storage import PriorSpec, prompt_messages


def prior_dataset(ws, stack, prompts, n: int, gold, noise: float, per_prompt: int,  # noqa: ANN001
                  cache: Path | None, seed: int = 0) -> list[PriorSpec]:
    """Up to `n` prior judgments from `prompts` (in order, as many as needed): `per_prompt` sampled responses
    each, every pair of distinct, non-empty responses the gold does not tie, drawn at random."""
    cfg = ws.config.sampling
    responses: list[list[str]] = []
    if cache is not None and cache.is_file():
        responses = json.loads(cache.read_text())
    need = max(1, -(-n // max(1, per_prompt * (per_prompt - 1) // 2)) * 2)  # about twice the prompts: gold ties
    todo = prompts[len(responses):min(len(prompts), need)]
    if todo:
        convs = [prompt_messages(p) for p in todo for _ in range(per_prompt)]
        out = generate_responses(stack, convs, max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature,
                                 top_p=cfg.top_p, batch_size=cfg.batch_size, progress="prior dataset")
        responses += [[r[0] for r in out[i * per_prompt:(i + 1) * per_prompt]] for i in range(len(todo))]
        if cache is not None:
            cache.parent.mkdir(parents=True, exist_ok=True)
            cache.write_text(json.dumps(responses))
    rng = random.Random(seed)
    candidates = []
    for prompt, texts in zip(prompts, responses):
        conv = prompt_messages(prompt)
        scores = [gold(conv, t) for t in texts]
        for i, j in combinations(range(len(texts)), 2):
            if texts[i].strip() and texts[j].strip() and scores[i] != scores[j] and \
                    " ".join(texts[i].split()) != " ".join(texts[j].split()):
                good, bad = (texts[i], texts[j]) if scores[i] > scores[j] else (texts[j], texts[i])
                if rng.random() < noise:
                    good, bad = bad, good
                candidates.append(PriorSpec(conv, good, bad))
    rng.shuffle(candidates)
    return candidates[:n]
