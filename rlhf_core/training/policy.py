"""Policy updates against a reward signal: the training loop (`train_policy`) and the service that
trains the next policy version from the workspace's current policy and reward model
(`run_policy_training`).

The policy adapter continues from the current version; the reference stays the base model (all
adapters disabled), so KL is always measured to the same anchor across rounds. PPO's critic (the
`value` adapter + head) is saved in a `value/` subdirectory of the version's adapter so the next
PPO round continues it too.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from rlhf_core.config import PolicyConfig
from rlhf_core.models.stack import ModelStack
from rlhf_core.training.grpo import grpo_update
from rlhf_core.training.ppo import fresh_critic, make_optimizer, ppo_update
from rlhf_core.training.rollout import ScoreFn, generate_rollout, reward_model_scores, rollout_logprobs, rollout_metrics
from rlhf_core.training.workspace_stack import activate_policy, activate_reward_model, adapter_dir
from rlhf_core.workspace import Workspace
from storage import (
    Database,
    PolicyVersion,
    add_policy_version,
    add_training_logs,
    current_policy,
    current_reward_model,
    get_policy,
    list_prompts,
    prompt_messages,
)

ALGORITHMS = ("ppo", "grpo")
# Per-step metrics the round summary reports (the operator page plots these keys).
SUMMARY_KEYS = ("reward_mean", "reward_std", "kl_per_token", "kl_per_sequence", "entropy", "response_length",
                "clip_fraction", "approx_kl", "value_loss", "explained_variance", "kl_k3", "samples_per_s")


@dataclass
class PolicyTrainResult:
    history: list[dict[str, Any]]  # one row per step: "step" plus metrics (None where undefined)
    summary: dict[str, Any]


def _finite(value: float) -> float | None:
    # JSON has no NaN; an undefined metric (e.g. explained variance of constant returns) is stored as null.
    return value if math.isfinite(value) else None


def _show(value: float | None, digits: int) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def summarize(history: list[dict[str, Any]], seconds: float) -> dict[str, Any]:
    """Round summary: each metric averaged over the last quarter of the steps (at least one), which
    describes the policy being shipped with less noise than the final step alone."""
    tail = history[-max(1, math.ceil(len(history) / 4)):]
    summary: dict[str, Any] = {}
    for key in SUMMARY_KEYS:
        values = [row[key] for row in tail if row.get(key) is not None]
        if values:
            summary[key] = sum(values) / len(values)
    summary["reward_mean_first"] = history[0]["reward_mean"] if history else None
    summary["steps"] = len(history)
    summary["stopped_at_kl"] = float(any(row.get("kl_stop") for row in history))
    summary["samples"] = sum(row["samples"] for row in history)
    summary["seconds"] = seconds
    return summary


def train_policy(stack: ModelStack, prompts: list[list[dict[str, str]]], score_fn: ScoreFn, cfg: PolicyConfig, *,
                 algo: str | None = None, on_step: Callable[[dict[str, Any]], None] | None = None,
                 progress: bool = True, max_grad_norm: float = 1.0) -> PolicyTrainResult:
    """`cfg.steps` iterations of: sample `cfg.prompts_per_step` prompts (seeded) -> roll out the policy
    (`cfg.group_size` samples per prompt for GRPO, one for PPO) -> score -> PPO or GRPO update.

    prompts: chat conversations; score_fn: a rollout -> [B] scores. Trains the stack's `policy`
    adapter in place (and `value` for PPO); the adapters are frozen again on return.
    """
    algo = algo or cfg.algo
    if algo not in ALGORITHMS:
        raise ValueError(f"unknown policy algorithm {algo!r}; expected one of {', '.join(ALGORITHMS)}")
    if not prompts:
        raise ValueError("no prompts to train the policy on")
    torch.manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    samples_per_prompt = cfg.group_size if algo == "grpo" else 1
    optimizer = make_optimizer(stack, ("policy", "value") if algo == "ppo" else ("policy",), cfg)
    update = ppo_update if algo == "ppo" else grpo_update

    history: list[dict[str, Any]] = []
    started = time.perf_counter()
    bar = tqdm(range(cfg.steps), desc=f"{algo} policy update", unit="step", disable=not progress)
    try:
        for step in bar:
            t0 = time.perf_counter()
            chosen = rng.sample(prompts, min(cfg.prompts_per_step, len(prompts)))
            rollout = generate_rollout(stack, chosen, samples_per_prompt=samples_per_prompt,
                                       max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature,
                                       min_new_tokens=cfg.min_new_tokens)
            logprobs = rollout_logprobs(stack, rollout, cfg.minibatch_size)
            scores = score_fn(rollout).detach().float()
            if scores.shape != (rollout.size,):
                raise ValueError(f"the score function returned shape {tuple(scores.shape)}; expected "
                                 f"({rollout.size},), one score per response")
            metrics = rollout_metrics(rollout, logprobs, scores)
            stop = 0.0 < cfg.max_kl_per_token < metrics["kl_k3_per_token"]
            if stop:  # the policy has drifted far enough: keep it as it is and end the round's updates
                bar.write(f"policy KL to the reference {metrics['kl_k3_per_token']:.4f} nats/token exceeds "
                          f"policy.max_kl_per_token = {cfg.max_kl_per_token}: no more updates this round")
            else:
                metrics = update(stack, rollout, scores, cfg, optimizer, logprobs=logprobs,
                                 max_grad_norm=max_grad_norm)
            seconds = time.perf_counter() - t0
            row = {"step": step, **{k: _finite(float(v)) for k, v in metrics.items()},
                   "samples": rollout.size, "seconds": seconds, "samples_per_s": rollout.size / seconds,
                   "kl_stop": float(stop)}
            history.append(row)
            bar.set_postfix(reward=_show(row["reward_mean"], 3), kl=_show(row["kl_per_token"], 4))
            if on_step:
                on_step(row)
            if stop:
                break
    finally:
        bar.close()
        stack.freeze_adapters()
        stack.model.eval()
    return PolicyTrainResult(history, summarize(history, time.perf_counter() - started))


def _activate_value(stack: ModelStack, version: PolicyVersion) -> None:
    value_dir = Path(version.adapter_path) / "value" if version.adapter_path else None
    if value_dir is not None and (value_dir / "adapter.safetensors").is_file():
        stack.load_adapter("value", value_dir)
    else:
        fresh_critic(stack)


def reference_adapter(db: Database, reference: str, current: PolicyVersion) -> Path | None:
    """Where the configured reference policy's adapter is saved; None for the base model."""
    if reference == "base":
        return None
    version = current if reference == "previous" else get_policy(db, int(reference))
    if version is None:
        raise ValueError(f"policy.reference = {reference!r}: there is no policy version {reference}")
    return Path(version.adapter_path) if version.adapter_path else None  # version 0 is the base


def run_policy_training(ws: Workspace, db: Database, stack: ModelStack, *, algo: str | None = None,
                        job_id: int | None = None, progress: bool = True,
                        on_progress: Callable[[float, str], None] | None = None) -> PolicyVersion:
    """Train the next policy version against the current reward model and record it.

    Continues the current policy adapter on the workspace's train-split prompts, saves it under
    `adapter_dir(ws, "policy", current.id + 1)` and only then adds the PolicyVersion row (with the
    summary metrics) and the per-step training logs (phase "policy").
    """
    cfg = ws.config.policy
    algo = algo or cfg.algo
    if algo not in ALGORITHMS:
        raise ValueError(f"unknown policy algorithm {algo!r}; expected one of {', '.join(ALGORITHMS)}")
    if current_reward_model(db) is None:
        raise ValueError("no reward model yet: train a reward model first (rlhf train-rm)")
    prompts = [prompt_messages(p) for p in list_prompts(db, split="train")]
    if not prompts:
        raise ValueError("no train-split prompts: import some first (rlhf prompts import FILE --split train)")

    current = current_policy(db)
    activate_policy(stack, db, current.id)
    activate_reward_model(stack, db)
    _activate_value(stack, current)
    stack.set_reference(reference_adapter(db, cfg.reference, current))

    def report(row: dict[str, Any]) -> None:
        if on_progress:
            on_progress((row["step"] + 1) / cfg.steps,
                        f"{algo} step {row['step'] + 1}/{cfg.steps}: reward {_show(row['reward_mean'], 3)}, "
                        f"KL/token {_show(row['kl_per_token'], 4)}")

    # A seed per version: each round draws other prompts and samples (a fixed seed would replay the same ones).
    result = train_policy(stack, prompts, reward_model_scores(stack), replace(cfg, seed=cfg.seed + current.id),
                          algo=algo, on_step=report, progress=progress)

    out = adapter_dir(ws, "policy", current.id + 1)
    stack.save_adapter("policy", out)
    # Always, so a GRPO round between two PPO rounds passes the critic on instead of dropping it.
    stack.save_adapter("value", out / "value")
    add_training_logs(db, phase="policy", rows=result.history, job_id=job_id)
    return add_policy_version(db, parent_id=current.id, adapter_path=str(out), algorithm=algo,
                              round=current.round + 1, metrics=result.summary)
