"""Policy updates: the rollout training loop of PPO, GRPO and any other algorithm that rolls out, scores
and updates (`train_policy`), and the service that trains the next policy version from the workspace's
current policy and reward model (`run_policy_training`) with the algorithm's trainer from the table
`rlhf_core.registry.POLICY_ALGORITHMS` (online DPO: `training.dpo`).

The policy adapter continues from the current version; the KL reference is `policy.reference` (the
base by default; "previous" makes the KL budget a trust region per round, and the KL to the base is
then logged as well). PPO's critic (the `value` adapter + head) is saved in a `value/` subdirectory
of the version's adapter so the next PPO round continues it too.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from rlhf_core.algorithms.kl_control import adaptive_kl_beta
from rlhf_core.config import Config, PolicyConfig
from rlhf_core.models.stack import ModelStack
from rlhf_core.registry import PolicyAlgorithm, resolve, rollout_algorithm, round_algorithm
from rlhf_core.training.checkpoint import Checkpoint, Tracked, fingerprint
from rlhf_core.training.distributed import DataParallel
from rlhf_core.training.ppo import fresh_critic, make_optimizer, rollout_values
from rlhf_core.training.publish import publish_version
from rlhf_core.training.reward_scores import policy_score_fn
from rlhf_core.training.rollout import (
    ScoreFn,
    gather_rollout,
    generate_rollout,
    rollout_logprobs,
    rollout_metrics,
    stop_kl,
)
from rlhf_core.training.run_log import PolicyTrainResult, StepLog, finite, show, summarize
from rlhf_core.training.sft import latest_sft_version
from rlhf_core.training.workspace_stack import activate_policy, activate_reward_model, adapter_dir
from rlhf_core.workspace import Workspace
from storage import (
    Database,
    PolicyVersion,
    add_policy_version,
    current_policy,
    current_reward_model,
    get_policy,
    list_prompts,
    next_policy_id,
    prompt_messages,
)


@dataclass
class PolicyUpdate:
    """What an algorithm's trainer gets for one round (`PolicyAlgorithm.trainer`): the stack with the current
    policy, its critic and the reference set up, the train prompts, the round's settings, and the reward
    model's score function (None without a reward model)."""

    ws: Workspace
    db: Database
    stack: ModelStack
    algorithm: PolicyAlgorithm
    current: PolicyVersion
    prompts: list[list[dict[str, str]]]
    cfg: PolicyConfig  # this round's: its seed, starting KL coefficient and KL budget share applied
    score_fn: ScoreFn | None
    on_step: Callable[[dict[str, Any]], None]
    on_progress: Callable[[float, str], None] | None
    progress: bool
    dp: DataParallel
    checkpoint: Checkpoint | None = None  # the job's, where a resumed training continues (`training.checkpoint`)


def train_with_rollouts(update: PolicyUpdate) -> PolicyTrainResult:
    """The trainer of rollout algorithms (PPO, GRPO): `train_policy` with the entry's update."""
    return train_policy(update.stack, update.prompts, update.score_fn, update.cfg, algo=update.algorithm.name,
                        on_step=update.on_step, progress=update.progress, dp=update.dp, checkpoint=update.checkpoint)


def train_policy(stack: ModelStack, prompts: list[list[dict[str, str]]], score_fn: ScoreFn, cfg: PolicyConfig, *,
                 algo: str | None = None, on_step: Callable[[dict[str, Any]], None] | None = None,
                 progress: bool = True, max_grad_norm: float = 1.0, dp: DataParallel | None = None,
                 checkpoint: Checkpoint | None = None) -> PolicyTrainResult:
    """`cfg.steps` iterations of: sample `cfg.prompts_per_step` prompts (seeded) -> roll out the policy
    (`cfg.group_size` samples per prompt for group-sampling algorithms such as GRPO, one for PPO) -> score ->
    the algorithm's update (`PolicyAlgorithm.update`; a critic's values where it trains the `value` adapter).

    prompts: chat conversations; score_fn: a rollout -> [B] scores. Trains the stack's `policy`
    adapter in place (and `value` for PPO); the adapters are frozen again on return. The KL
    coefficient starts at `cfg.kl_beta`; with `cfg.kl_control = "adaptive"` each step's KL moves it
    for the next step (each row logs the `kl_beta` its update used; the summary's `kl_beta` is the
    value a next round would start from). With `dp` (several processes), each process rolls out,
    scores and measures its share of the step's prompts; the shares are gathered and every process
    makes the same update (`grpo_update` / `ppo_update`). With `checkpoint` (one process), the training resumes
    from it and writes it every `checkpoint.every` steps (`training.checkpoint`).
    """
    spec = rollout_algorithm(algo or cfg.algo)
    algo, critic = spec.name, "value" in spec.adapters
    dp = dp or DataParallel(single=True)
    if not prompts:
        raise ValueError("no prompts to train the policy on")
    per_step = min(cfg.prompts_per_step, len(prompts))
    if per_step < dp.world:
        raise ValueError(f"{per_step} prompts per step cannot be shared by {dp.world} training processes: raise "
                         "policy.prompts_per_step (or import more train prompts), or launch fewer processes")
    torch.manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    # Minibatch order: the same in every process. Sampling: another stream per process (one process keeps
    # torch's global generator).
    order = torch.Generator().manual_seed(cfg.seed)
    sampling = dp.sampling_generator(stack.device, cfg.seed)
    samples_per_prompt = cfg.group_size if spec.group_sampling else 1
    optimizer = make_optimizer(stack, spec.adapters, cfg)
    update = resolve(spec.update)
    beta = cfg.kl_beta
    pad = stack.tokenizer.pad_token_id

    saved = Tracked(None if dp.enabled else checkpoint, stack, optimizer, rng=rng, generators=(order,),
                    inputs=fingerprint(prompts, cfg, algo, max_grad_norm))
    state = saved.resume()  # {} unless a checkpoint of this same training is there
    history: list[dict[str, Any]] = state.get("history", [])
    beta = state.get("beta", beta)
    started = time.perf_counter()
    bar = tqdm(range(saved.resumed_from, cfg.steps), desc=f"{algo} policy update", unit="step",
               disable=not (progress and dp.is_main))
    try:
        for step in bar:
            t0 = time.perf_counter()
            chosen = dp.shard(rng.sample(prompts, per_step))
            rollout = generate_rollout(stack, chosen, samples_per_prompt=samples_per_prompt,
                                       max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature,
                                       min_new_tokens=cfg.min_new_tokens, generator=sampling)
            logprobs = rollout_logprobs(stack, rollout, cfg.minibatch_size)
            scores = score_fn(rollout).detach().float()
            components = dict(getattr(score_fn, "last_metrics", {}))  # each reward component's mean (this share)
            if scores.shape != (rollout.size,):
                raise ValueError(f"the score function returned shape {tuple(scores.shape)}; expected "
                                 f"({rollout.size},), one score per response")
            values = rollout_values(stack, rollout, cfg.minibatch_size) if critic else None
            rollout, logprobs, scores, values = gather_rollout(dp, rollout, logprobs, scores, values, pad)
            metrics = rollout_metrics(rollout, logprobs, scores)
            kl = metrics["kl_k3_per_token"]
            drift = stop_kl(metrics)
            stop = 0.0 < cfg.max_kl_per_token < drift
            if stop:  # the policy has drifted far enough: keep it as it is and end the round's updates
                if dp.is_main:
                    bar.write(f"policy KL to the reference {drift:.4f} nats/token exceeds "
                              f"policy.max_kl_per_token = {cfg.max_kl_per_token}: no more updates this round")
            else:
                extra = {"values": values} if critic else {}
                metrics = update(stack, rollout, scores, replace(cfg, kl_beta=beta), optimizer, logprobs=logprobs,
                                 max_grad_norm=max_grad_norm, dp=dp, generator=order, **extra)
            seconds = time.perf_counter() - t0
            row = {"step": step, **{k: finite(None if v is None else float(v)) for k, v in metrics.items()},
                   "samples": rollout.size, "seconds": seconds, "samples_per_s": rollout.size / seconds,
                   "kl_stop": float(stop), "kl_beta": beta, **components}
            if cfg.kl_control == "adaptive":  # as in Ziegler et al.: this step's KL sets the next step's β
                beta = adaptive_kl_beta(beta, kl, cfg.target_kl, rollout.size, cfg.kl_horizon)
            history.append(row)
            bar.set_postfix(reward=show(row["reward_mean"], 3), kl=show(row["kl_per_token"], 4))
            if on_step:
                on_step(row)
            saved.step_done(step + 1, history=history, beta=beta)
            if stop:
                break
    finally:
        bar.close()
        stack.freeze_adapters()
        stack.model.eval()
    summary = summarize(history, time.perf_counter() - started)
    summary["kl_beta"] = beta
    return PolicyTrainResult(history, summary)


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
    if reference == "sft":  # the seeds' objective: KL to the SFT policy (the KL to the base is logged beside it)
        version = latest_sft_version(db)
        if version is None:
            raise ValueError('policy.reference = "sft" but there is no SFT version yet: run `rlhf train-sft` '
                             "on demonstrations first (or set loop.sft_first = true)")
        return Path(version.adapter_path)
    version = current if reference == "previous" else get_policy(db, int(reference))
    if version is None:
        raise ValueError(f"policy.reference = {reference!r}: there is no policy version {reference}")
    return Path(version.adapter_path) if version.adapter_path else None  # version 0 is the base


def starting_kl_beta(cfg: PolicyConfig, current: PolicyVersion) -> float:
    """policy.kl_beta, or with the adaptive controller the β the current version's round ended with."""
    if cfg.kl_control != "adaptive":
        return cfg.kl_beta
    carried = json.loads(current.metrics_json or "{}").get("kl_beta")
    return float(carried) if isinstance(carried, (int, float)) and carried > 0 else cfg.kl_beta


def kl_budget_share(cfg: PolicyConfig, round_number: int) -> dict[str, float]:
    """With `policy.kl_budget`: the settings that hold round `round_number` to its share of the budget,
    kl_budget · min(1, round / kl_budget_rounds) nats/token to the reference: the KL stop (the smaller of it and
    max_kl_per_token) and, with the adaptive controller, its target. Round 2 of 3 under 0.1: 0.0667."""
    if cfg.kl_budget <= 0:
        return {}
    share = cfg.kl_budget * min(1.0, round_number / cfg.kl_budget_rounds)
    out = {"max_kl_per_token": min(share, cfg.max_kl_per_token) if cfg.max_kl_per_token > 0 else share}
    return {**out, "target_kl": share} if cfg.kl_control == "adaptive" else out


def needs_reward_model(spec: PolicyAlgorithm, config: Config) -> bool:
    """Whether a round with `spec` scores with the reward model: always, or when its `reward_model_with`
    setting ("section.key") is above 0 (DPO's policy.dpo_rm_pairs)."""
    if spec.needs_reward_model:
        return True
    if not spec.reward_model_with:
        return False
    section, _, key = spec.reward_model_with.partition(".")
    return getattr(getattr(config, section), key) > 0


def run_policy_training(ws: Workspace, db: Database, stack: ModelStack, *, algo: str | None = None,
                        job_id: int | None = None, progress: bool = True,
                        on_progress: Callable[[float, str], None] | None = None,
                        dp: DataParallel | None = None) -> PolicyVersion | None:
    """Train the next policy version with `algo` (default `policy.algo`; an entry of the algorithm table whose
    trainer makes one round's update) and record it: PPO/GRPO against the current reward model, DPO on the
    judged pairs sampled from the current version, and so on.

    Continues the current policy adapter on the workspace's train-split prompts, saves it under
    `adapter_dir(ws, "policy", next_policy_id(db))` and only then adds the PolicyVersion row (with the
    summary metrics) and the per-step training logs (phase "policy", also to TensorBoard when
    `logging.report_to` says so). With `dp`, every process trains its share; only the main one logs,
    saves and records (the others return None).
    """
    dp = dp or DataParallel(single=True)
    cfg = ws.config.policy
    spec = round_algorithm(algo or cfg.algo)
    algo = spec.name
    verifiable = ws.config.loop.mode == "verifiable"  # the reward functions alone: no reward model
    if verifiable and not spec.uses_rollouts:
        raise ValueError(f'loop.mode = "verifiable" scores the policy\'s own samples: {algo} does not sample; use '
                         "--algo grpo (or ppo)")
    has_rm = current_reward_model(db) is not None and not verifiable
    if not has_rm and not verifiable and needs_reward_model(spec, ws.config):
        why = "" if spec.needs_reward_model else f" ({spec.reward_model_with} ranks samples with it)"
        raise ValueError(f"no reward model yet{why}: train a reward model first (rlhf train-rm)")
    train_prompts = list_prompts(db, split="train")
    prompts = [prompt_messages(p) for p in train_prompts]
    if not prompts:
        raise ValueError("no train-split prompts: import some first (rlhf prompts import FILE --split train)")

    current = current_policy(db)
    activate_policy(stack, db, current.id)
    if has_rm:
        activate_reward_model(stack, db)
    _activate_value(stack, current)
    stack.set_reference(reference_adapter(db, cfg.reference, current))
    log = StepLog(ws, spec.phase, f"policy-v{next_policy_id(db):04d}-{algo}") if dp.is_main else None
    checkpoint = Checkpoint.for_job(ws, job_id, "policy") if dp.is_main else None
    if checkpoint is not None:  # resumed only by a training from the same version with the same algorithm
        checkpoint.context.update(from_version=current.id, algo=algo)

    def report(row: dict[str, Any]) -> None:
        if log is None:
            return
        log.add(row)
        if on_progress and spec.uses_rollouts:
            on_progress((row["step"] + 1) / cfg.steps,
                        f"{algo} step {row['step'] + 1}/{cfg.steps}: reward {show(row['reward_mean'], 3)}, "
                        f"KL/token {show(row['kl_per_token'], 4)}")

    # A seed per version: each round draws other prompts and samples (a fixed seed would replay the same ones).
    round_cfg = replace(cfg, seed=cfg.seed + current.id, kl_beta=starting_kl_beta(cfg, current),
                        **kl_budget_share(cfg, current.round + 1))
    score_fn = policy_score_fn(stack, ws.config.reward, train_prompts, use_model=has_rm)
    update = PolicyUpdate(ws=ws, db=db, stack=stack, algorithm=spec, current=current, prompts=prompts, cfg=round_cfg,
                          score_fn=score_fn, on_step=report, on_progress=on_progress, progress=progress, dp=dp,
                          checkpoint=checkpoint)
    try:
        result = resolve(spec.trainer)(update)
    finally:
        if log is not None:
            log.close()
    if log is None:
        return None

    number = next_policy_id(db)
    out = adapter_dir(ws, "policy", number)

    def write(directory: Path) -> None:
        stack.save_adapter("policy", directory)
        # Always, so a GRPO round between two PPO rounds passes the critic on instead of dropping it.
        stack.save_adapter("value", directory / "value")

    log.save(db, job_id)
    # Which base the adapter learned on: an export merges into the same (de-quantized 4-bit, or full precision).
    metrics = {**result.summary, "base_4bit": stack.quantized, "job_id": job_id,
               "resumed_from_step": checkpoint.resumed_from if checkpoint is not None else 0}
    return publish_version(out, write, lambda: add_policy_version(
        db, parent_id=current.id, adapter_path=str(out), algorithm=algo, round=current.round + 1, metrics=metrics,
        version_id=number), f"policy v{number}")
