"""The verifiable prompt set shipped in the package and what `bench/verifiable.py` measures with it.

The set (`rlhf_core/data/verifiable_prompts.jsonl`, train; `verifiable_eval_prompts.jsonl`, held out) holds short
arithmetic and format-following tasks, each with its `answer` column ("What is 7 + 5? Reply with the number
only." -> 12; "Reply with only the word \"lemon\" and nothing else." -> lemon), made by `bench/_verifiable_set.py`.
Two reward functions check them (`VERIFIABLE_FUNCTIONS`): `correct` (answer_match on the answer column) and
`answer_only` (format_regex: the response is the answer alone, a single word or number). Accuracy is `correct`'s
mean over greedy answers to the held-out prompts.

With a reward model too, simulated annotators judge pairs by the same checks (`verifier_gold`: the response the
functions score higher wins; equal scores tie), as a person who checks the answer would.
"""

from __future__ import annotations

from dataclasses import replace
from importlib import resources
from pathlib import Path

from rlhf_core.config import RewardFunctionConfig, dump_config
from rlhf_core.data.prompt_files import read_prompt_records
from rlhf_core.models.stack import ModelStack
from rlhf_core.rewards import build_reward_functions, score_with_functions
from rlhf_core.simulator.gold import GoldScore
from rlhf_core.workspace import Workspace, init_workspace
from storage import (
    Database,
    add_prompts,
    canonical_messages,
    count_prompts,
    list_prompts,
    prompt_columns,
    prompt_messages,
)

# A response that is its answer alone: one word or number, maybe with a sign, a decimal point or final punctuation.
ANSWER_ONLY = r"^\s*[-+]?[\w.]+[.!]?\s*$"
VERIFIABLE_FUNCTIONS = (
    RewardFunctionConfig(kind="answer_match", column="answer", name="correct"),
    RewardFunctionConfig(kind="format_regex", pattern=ANSWER_ONLY, name="answer_only", weight=0.5),
)


def verifiable_prompt_files() -> tuple[Path, Path]:
    """The shipped set: (train file, held-out eval file), JSON Lines with `prompt`, `answer` and `task`."""
    data = resources.files("rlhf_core") / "data"
    return Path(str(data / "verifiable_prompts.jsonl")), Path(str(data / "verifiable_eval_prompts.jsonl"))


def prepare_verifiable_workspace(root: Path, *, model: str = "default", profile: str = "auto",
                                 mode: str = "verifiable") -> Workspace:
    """A workspace with the verifiable set imported (train and eval, with their columns) and
    `VERIFIABLE_FUNCTIONS` configured in `loop.mode = mode`, written to its rlhf.toml."""
    ws, _ = init_workspace(root, model=model, new_profile=profile)
    ws.config.reward.functions = [replace(f) for f in VERIFIABLE_FUNCTIONS]
    ws.config.loop.mode = mode
    (ws.root / "rlhf.toml").write_text(dump_config(ws.config), encoding="utf-8")
    db = ws.database()
    if count_prompts(db) == 0:
        limit = ws.config.labeling.max_prompt_chars
        for path, split in zip(verifiable_prompt_files(), ("train", "eval"), strict=True):
            records = read_prompt_records(path, max_prompt_chars=limit)
            add_prompts(db, [m for m, _ in records], split=split, source="verifiable",
                        columns=[c for _, c in records])
    db.dispose()
    return ws


def verifier_gold(ws: Workspace, db: Database, *, tie_break: float = 0.0) -> GoldScore:
    """A gold preference that scores a response by the configured functions' weighted sum, reading the prompt's
    stored columns (a simulated annotator who checks the answer). `tie_break` x its length in characters is added
    (a smoke run's random tiny model scores 0 everywhere: every pair would tie)."""
    functions = build_reward_functions(ws.config.reward.functions)
    columns = {canonical_messages(prompt_messages(p)): prompt_columns(p) for p in list_prompts(db)}

    def score(prompt: list[dict[str, str]], response: str) -> float:
        named = columns.get(canonical_messages(prompt), {})
        return score_with_functions(functions, [prompt], [response], [named]).total()[0] + tie_break * len(response)

    return score


def greedy_scores(ws: Workspace, db: Database, stack: ModelStack, version: int, *, limit: int,
                  max_new_tokens: int) -> dict[str, float]:
    """Each configured function's mean over `version`'s greedy answers to the first `limit` eval prompts (None
    counted as not applying), plus "tokens", the mean answer length."""
    from rlhf_core.models.batching import prompt_token_ids
    from rlhf_core.models.generation import SamplingParams
    from rlhf_core.training.workspace_stack import activate_policy

    prompts = list_prompts(db, split="eval", limit=limit)
    conversations = [prompt_messages(p) for p in prompts]
    activate_policy(stack, db, version)
    try:
        ids = stack.sample([prompt_token_ids(stack.tokenizer, c) for c in conversations],
                           SamplingParams(max_new_tokens=max_new_tokens, temperature=0.0),
                           adapter="policy" if version else None)
    finally:
        activate_policy(stack, db)
    texts = [stack.tokenizer.decode(i, skip_special_tokens=True).strip() for i in ids]
    functions = build_reward_functions(ws.config.reward.functions)
    scored = score_with_functions(functions, conversations, texts, [prompt_columns(p) for p in prompts],
                                  completion_ids=[list(i) for i in ids])
    means = {}
    for name, values in scored.values.items():
        known = [v for v in values if v is not None]
        means[name] = sum(known) / len(known) if known else 0.0
    means["tokens"] = sum(len(i) for i in ids) / max(1, len(ids))
    return means
