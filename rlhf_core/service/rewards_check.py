"""`rlhf rewards check`: the reward functions and the reward model side by side on a version's responses, so a
verifier is tried on live samples before it trains anything. The responses are the version's stored samples (with
their prompts' columns), or its answers to a prompt file's prompts (with the file's columns)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlhf_core.registry import REWARD_MODEL_COMPONENT
from rlhf_core.rewards import build_reward_functions, missing_columns, score_with_functions
from rlhf_core.service.playground import resolve_versions
from rlhf_core.workspace import Workspace
from storage import Database, current_reward_model, prompt_columns, prompt_messages, version_samples


class RewardsCheckError(ValueError):
    """Nothing to check, or nothing to check it on; the message says what to do."""


@dataclass
class CheckedResponse:
    prompt: str  # the last user turn
    response: str
    scores: dict[str, float | None]  # per component (None: does not apply)
    combined: float


@dataclass
class RewardsCheck:
    version: int
    source: str  # "stored samples" or the prompt file's name
    components: list[str]
    weights: list[float]
    combine: str
    rows: list[CheckedResponse]
    notes: list[str] = field(default_factory=list)

    def summary(self) -> list[dict[str, Any]]:
        """Per component: its weight, mean over the responses it applies to, and how many that is."""
        out = []
        for name, weight in zip(self.components, self.weights, strict=True):
            values = [r.scores[name] for r in self.rows if r.scores[name] is not None]
            out.append({"name": name, "weight": weight, "applies": len(values),
                        "mean": sum(values) / len(values) if values else None})
        return out


def _responses(ws: Workspace, db: Database, version: int, prompts_file: Path | None, limit: int, stack: Any
               ) -> tuple[list[list[dict[str, str]]], list[str], list[dict[str, Any]], list[list[int]] | None, str]:
    if prompts_file is None:
        found = version_samples(db, version, limit)
        if not found:
            raise RewardsCheckError(f"policy v{version} has no stored samples: sample some (`rlhf sample`) or give "
                                    "--prompts FILE to have it answer a prompt file")
        found.reverse()
        return ([prompt_messages(p) for p, _ in found], [s.text for _, s in found],
                [prompt_columns(p) for p, _ in found], None, "stored samples")
    from rlhf_core.data.prompt_files import read_prompt_records
    from rlhf_core.service.playground import try_versions

    records = read_prompt_records(prompts_file, max_prompt_chars=ws.config.labeling.max_prompt_chars)[:limit]
    cfg = ws.config.sampling
    answers = try_versions(stack(), db, [m for m, _ in records], [version], greedy=False,
                           max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, top_p=cfg.top_p)[0]
    return ([m for m, _ in records], [a.text for a in answers], [c for _, c in records],
            [a.token_ids for a in answers], prompts_file.name)


def check_rewards(ws: Workspace, db: Database, *, version: int | None = None, prompts_file: Path | None = None,
                  limit: int = 20, stack_loader: Any = None) -> RewardsCheck:
    """Score up to `limit` responses of policy `version` (default: the current one) with every reward function and,
    outside verifiable mode, the current reward model, and combine them as a round would (`reward.combine`).
    `stack_loader()` returns the model stack, loaded only when a reward model scores or a prompt file is
    answered."""
    import torch

    from rlhf_core.algorithms.evidence import conservative_reward
    from rlhf_core.algorithms.reward_combination import combine_rewards

    reward = ws.config.reward
    functions = build_reward_functions(reward.functions)
    rm = current_reward_model(db) if ws.config.loop.mode != "verifiable" else None
    if not functions and rm is None:
        raise RewardsCheckError("nothing to check: add [[reward.functions]] entries to rlhf.toml (or train a reward "
                                "model: rlhf train-rm)")
    if not 1 <= limit <= 10_000:
        raise RewardsCheckError("--limit must be between 1 and 10000")
    (chosen,) = resolve_versions(db, [version])
    loaded: list[Any] = []

    def stack() -> Any:
        if not loaded:
            loaded.append(stack_loader())
        return loaded[0]

    prompts, texts, columns, ids, source = _responses(ws, db, chosen.id, prompts_file, limit, stack)
    names, weights, rows = [], [], []
    notes = [problem] if (problem := missing_columns(functions, {c for row in columns for c in row})) else []
    if rm is not None:
        from rlhf_core.loop.pair_selection import response_member_scores
        from rlhf_core.training.workspace_stack import activate_reward_model

        activate_reward_model(stack(), db)
        members = response_member_scores(stack(), prompts, texts, max_length=reward.max_length)
        names.append(REWARD_MODEL_COMPONENT)
        weights.append(reward.model_weight if functions else 1.0)
        rows.append(conservative_reward(members, reward.conservative, reward.conservative_lambda).float())
        notes.append(f"reward_model: reward model v{rm.id} ({reward.conservative} of its {members.shape[1]} heads)")
    if functions:
        scored = score_with_functions(functions, prompts, texts, columns, completion_ids=ids)
        for f in functions:
            names.append(f.name)
            weights.append(f.weight)
            rows.append(torch.tensor([float("nan") if v is None else v for v in scored.values[f.name]]))
    components = torch.stack(rows)
    combined = combine_rewards(components, torch.tensor(weights), reward.combine if functions else "sum")
    checked = [CheckedResponse(prompt=prompts[i][-1]["content"], response=texts[i],
                               scores={n: (None if torch.isnan(components[k, i]) else float(components[k, i]))
                                       for k, n in enumerate(names)}, combined=float(combined[i]))
               for i in range(len(texts))]
    return RewardsCheck(chosen.id, source, names, weights, reward.combine, checked, notes)
