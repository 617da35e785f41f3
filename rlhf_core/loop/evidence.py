"""Evidence that the loop improves, gathered by each round (rlhf_core.algorithms.evidence holds the rules).

- Fresh accuracy: before reward model r+1 trains, reward model r is scored on the judgments recorded since it
  was trained (pairs sampled from the current version, which it never saw); stored with reward model r, and
  with the policy version those pairs came from.
- Proxy gain: each new version answers `loop.probe_prompts` eval prompts (the base answers them once); the reward
  model that trained the version scores both (its claimed gain, an effect size in base standard deviations), and
  the next reward model scores them again, with the predecessor's answers (re-scored gains).
- The over-optimization rule and, with `loop.promote = "if_not_worse"`, the promotion decision read that evidence
  and the human win rates of evaluation batches; an alarm and a demotion are stored on the version and audited.

Answers are kept in `probe.json` beside each version's adapter (the base's in the workspace's cache), so a later
reward model re-scores exactly what an earlier one scored.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from rlhf_core.algorithms.evidence import (
    Accuracy,
    Alarm,
    VersionEvidence,
    conservative_reward,
    effect_size,
    overoptimization_alarm,
    worse_than_predecessor,
)
from rlhf_core.loop.evaluation import PREVIOUS_KIND, human_win_rates
from rlhf_core.loop.sampling import generate_responses
from rlhf_core.models.stack import ModelStack
from rlhf_core.training.crowd_weights import believed_signs, stored_reliability
from rlhf_core.training.reward_data import PreferenceExample, encode_pairs, preference_examples
from rlhf_core.training.reward_model import score_pairs
from rlhf_core.training.workspace_stack import activate_policy
from rlhf_core.workspace import Workspace
from storage import (
    Database,
    PolicyVersion,
    RewardModelVersion,
    get_policy,
    judgment_rows,
    list_prompts,
    prompt_messages,
    record_audit,
    retire_open_pairs,
    set_current_policy,
    update_policy_metrics,
    update_reward_model_metrics,
)

PROBE_FILE = "probe.json"
FRESH_MAX_JUDGMENTS = 600  # a seeded sample beyond this: the cost of one scoring pass
AUTO = "auto"  # the audit log's actor for what the loop decides itself


# -- fresh accuracy ------------------------------------------------------------------------------------------------
def _naive(value: Any) -> Any:  # noqa: ANN401 - a datetime; SQLite hands them back without a zone
    return value.replace(tzinfo=None) if getattr(value, "tzinfo", None) else value


def fresh_accuracy(ws: Workspace, db: Database, stack: ModelStack, rm: RewardModelVersion, version: PolicyVersion
                   ) -> tuple[Accuracy, Accuracy]:
    """Reward model `rm`'s accuracy (its ensemble mean; its adapter must be the stack's `reward` adapter) on
    people's decisive judgments of training and imported pairs recorded after it was trained, which it never
    saw: all of them, and those of pairs sampled from `version` (the policy it trained). With CrowdBT
    (`reward.annotator_model`) and the reliability `rm` stored, on the labels it believes (`believed_signs`: a
    coin-flipper's and a left-biased annotator's "left" left out, as held-out accuracy counts them)."""
    rows = [r for r in judgment_rows(db, kinds=("train", "imported")) if _naive(r.created_at) > _naive(rm.created_at)]
    if len(rows) > FRESH_MAX_JUDGMENTS:
        rows = random.Random(ws.config.reward.seed).sample(rows, FRESH_MAX_JUDGMENTS)
    decisive = [r for r in rows if r.choice in ("a", "b")]
    if not decisive:
        return Accuracy(0, 0), Accuracy(0, 0)
    examples, _ = preference_examples(decisive)
    cfg = ws.config.reward
    r_c, r_r = score_pairs(stack, encode_pairs(stack.tokenizer, examples, cfg.max_length), cfg.batch_size)
    right = (r_c.mean(dim=1) > r_r.mean(dim=1)).tolist()
    reliability = stored_reliability(rm) if cfg.annotator_model == "crowd_bt" else None
    signs = believed_signs(examples, reliability) if reliability else [1] * len(examples)
    counted = [(ok == (sign > 0), r) for ok, sign, r in zip(right, signs, decisive, strict=True) if sign]
    right = [ok for ok, _ in counted]
    mine = [ok for ok, r in counted if r.version_a == version.id == r.version_b]
    return Accuracy(sum(right), len(right)), Accuracy(sum(mine), len(mine))


def _figure(accuracy: Accuracy) -> dict[str, Any]:
    return {"right": accuracy.right, "n": accuracy.n, "accuracy": accuracy.value,
            "interval": list(accuracy.interval) if accuracy.interval else None}


def record_fresh(db: Database, rm: RewardModelVersion, version: PolicyVersion, fresh: Accuracy, on_version: Accuracy
                 ) -> None:
    """Store fresh accuracy with the reward model (beside its held-out accuracy) and, measured on `version`'s own
    pairs, with that policy version."""
    update_reward_model_metrics(db, rm.id, {"fresh": {**_figure(fresh), "policy_version": version.id}})
    if version.id:
        update_policy_metrics(db, version.id, {"fresh": {**_figure(on_version), "reward_model": rm.id}})


# -- the proxy gain on probe prompts -------------------------------------------------------------------------------
def probe_prompts(ws: Workspace, db: Database) -> list[Any]:
    """The prompts every version answers: the first `loop.probe_prompts` eval prompts (train ones if none)."""
    n = ws.config.loop.probe_prompts
    if n <= 0:
        return []
    return list_prompts(db, split="eval", limit=n) or list_prompts(db, split="train", limit=n)


def _answers(ws: Workspace, stack: ModelStack, conversations: list[list[dict[str, str]]], adapter: str | None,
             seed: int) -> list[str]:
    cfg = ws.config.sampling
    torch.manual_seed(seed)
    out = generate_responses(stack, conversations, max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature,
                             top_p=cfg.top_p, adapter=adapter, batch_size=cfg.batch_size)
    return [r.text for r in out]


def _probe_path(ws: Workspace, version: PolicyVersion) -> Path:
    if version.id == 0 or not version.adapter_path:
        return ws.cache_dir / f"base-{PROBE_FILE}"
    return Path(version.adapter_path) / PROBE_FILE


def probe_answers(ws: Workspace, db: Database, stack: ModelStack, version: PolicyVersion
                  ) -> dict[str, list] | None:
    """The probe prompts' ids and `version`'s answers to them: read from its probe file, or sampled (seeded)
    and written there once. None without probe prompts."""
    prompts = probe_prompts(ws, db)
    if not prompts:
        return None
    ids = [p.id for p in prompts]
    cfg = ws.config.sampling
    settings = {"max_new_tokens": cfg.max_new_tokens, "temperature": cfg.temperature, "top_p": cfg.top_p}
    path = _probe_path(ws, version)
    if path.is_file():
        stored = json.loads(path.read_text(encoding="utf-8"))
        if stored.get("prompt_ids") == ids and stored.get("settings", settings) == settings:
            return stored
    activate_policy(stack, db, version.id)
    answers = _answers(ws, stack, [prompt_messages(p) for p in prompts], "policy" if version.id else None,
                       ws.config.policy.seed + 7919 * version.id)
    probe = {"prompt_ids": ids, "answers": answers, "settings": settings}
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".tmp")
    partial.write_text(json.dumps(probe), encoding="utf-8")
    partial.replace(path)  # written whole or not at all
    return probe


def probe_scores(ws: Workspace, db: Database, stack: ModelStack, probe: dict[str, list]) -> list[float]:
    """The stack's reward model's scores of a probe's answers, members combined as the policy update combines
    them (`reward.conservative`)."""
    by_id = {p.id: p for p in list_prompts(db)}
    examples = [PreferenceExample(prompt_messages(by_id[pid]), text, text, None, pid)
                for pid, text in zip(probe["prompt_ids"], probe["answers"], strict=True)]
    cfg = ws.config.reward
    members, _ = score_pairs(stack, encode_pairs(stack.tokenizer, examples, cfg.max_length), cfg.batch_size)
    return conservative_reward(members, cfg.conservative, cfg.conservative_lambda).tolist()


def proxy_gain(ws: Workspace, db: Database, stack: ModelStack, version: PolicyVersion) -> float | None:
    """`version`'s gain over the base as the stack's reward model sees it on the probe prompts (effect size)."""
    if version.id == 0:
        return 0.0
    mine = probe_answers(ws, db, stack, version)
    base = probe_answers(ws, db, stack, get_policy(db, 0))
    if mine is None or base is None:
        return None
    return effect_size(probe_scores(ws, db, stack, mine), probe_scores(ws, db, stack, base))


def record_claimed_gain(ws: Workspace, db: Database, stack: ModelStack, version: PolicyVersion) -> float | None:
    """A new version's proxy gain as the reward model that trained it claims it (the stack's reward adapter)."""
    gain = proxy_gain(ws, db, stack, version)
    if gain is not None:
        update_policy_metrics(db, version.id, {"claimed_gain": round(gain, 4)})
    return gain


def record_rescored_gains(ws: Workspace, db: Database, stack: ModelStack, version: PolicyVersion) -> None:
    """The next reward model (the stack's, just trained) re-scores `version`'s gain and its predecessor's."""
    if version.id == 0:
        return
    gain = proxy_gain(ws, db, stack, version)
    parent = get_policy(db, version.parent_id) if version.parent_id else None
    parent_gain = proxy_gain(ws, db, stack, parent) if parent is not None else 0.0
    if gain is not None:
        update_policy_metrics(db, version.id, {"rescored_gain": round(gain, 4),
                                               "rescored_predecessor_gain": round(parent_gain or 0.0, 4)})


# -- reading the evidence ------------------------------------------------------------------------------------------
def _accuracy(figure: Any) -> Accuracy | None:  # noqa: ANN401 - a stored {"right", "n"} or a win-rate record
    if not isinstance(figure, dict):
        return None
    if "wins" in figure:
        return Accuracy(figure["wins"], figure["judgments"])
    return Accuracy(figure["right"], figure["n"]) if figure.get("n") else None


def version_evidence(version: PolicyVersion, vs_previous: dict[int, dict[str, Any]]) -> VersionEvidence:
    """What `version`'s stored metrics and the evaluation batches say of it."""
    m = json.loads(version.metrics_json or "{}")
    return VersionEvidence(version=version.id, claimed_gain=m.get("claimed_gain"),
                           rescored_gain=m.get("rescored_gain"),
                           rescored_predecessor_gain=m.get("rescored_predecessor_gain"),
                           fresh=_accuracy(m.get("fresh")), human_vs_previous=_accuracy(vs_previous.get(version.id)),
                           kl_to_base=m.get("kl_base_per_token", m.get("kl_per_token")))


def lineage(db: Database, version: PolicyVersion) -> list[PolicyVersion]:
    """`version` and its ancestors, oldest first, the base left out."""
    chain = []
    while version is not None and version.id != 0:
        chain.append(version)
        version = get_policy(db, version.parent_id) if version.parent_id is not None else None
    return chain[::-1]


def evidence_history(db: Database, version: PolicyVersion) -> list[VersionEvidence]:
    vs_previous = human_win_rates(db, PREVIOUS_KIND)
    return [version_evidence(v, vs_previous) for v in lineage(db, version)]


def judge_current_version(ws: Workspace, db: Database, version: PolicyVersion) -> tuple[Alarm | None, str | None]:
    """The over-optimization rule and (with `loop.promote = "if_not_worse"`) the promotion rule on `version`,
    the current one: an alarm is stored on it and audited; a version worse than its predecessor is demoted (the
    predecessor becomes current, the next round starts from it). Returns (alarm, why demoted)."""
    history = evidence_history(db, version)
    alarm = overoptimization_alarm(history)
    if alarm is not None:
        update_policy_metrics(db, version.id, {"overoptimization": alarm.reason})
        record_audit(db, AUTO, "overoptimization", version=version.id, reason=alarm.reason)
    worse = worse_than_predecessor(history) if ws.config.loop.promote == "if_not_worse" else None
    if worse is not None and version.parent_id is not None:
        update_policy_metrics(db, version.id, {"promotion": {"promoted": False, "reason": worse}})
        set_current_policy(db, version.parent_id)
        closed = retire_open_pairs(db, [version.id])  # the page serves the current version's pairs
        record_audit(db, AUTO, "demote", version=version.id, current=version.parent_id, reason=worse,
                     open_pairs_closed=closed)
    return alarm, worse


def alarms(db: Database, versions: Sequence[PolicyVersion]) -> dict[int, str]:
    """The over-optimization alarm stored on each of `versions` that has one."""
    out = {}
    for v in versions:
        reason = json.loads(v.metrics_json or "{}").get("overoptimization")
        if reason:
            out[v.id] = reason
    return out
