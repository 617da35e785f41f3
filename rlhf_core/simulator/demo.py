"""The loop end to end with simulated annotators: `rlhf demo` and `bench/loop_efficacy.py`.

Each round samples pairs from the current policy, lets simulated annotators judge them by a
hidden gold preference (through the same storage path as people), retrains the reward model,
updates the policy, and measures the policy against the base on held-out eval prompts.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from rlhf_core.config import Config, SamplingConfig
from rlhf_core.data.prompt_files import read_prompt_file
from rlhf_core.loop.rounds import run_round
from rlhf_core.loop.sampling import generate_responses, sample_pairs
from rlhf_core.models.stack import ModelStack
from rlhf_core.simulator.evaluation import GoldEvaluation, gold_evaluation
from rlhf_core.simulator.gold import GoldRewrite, GoldScore, get_gold, get_gold_rewrite, gold_win_rate
from rlhf_core.simulator.simulate import simulate_annotators
from rlhf_core.training.sft import run_sft_training
from rlhf_core.training.workspace_stack import load_stack
from rlhf_core.workspace import Workspace, init_workspace
from storage import (
    Database,
    DemonstrationSpec,
    add_demonstrations,
    add_prompts,
    count_prompts,
    get_policy,
    get_reward_model,
    list_policies,
    list_prompts,
    prompt_messages,
)


@dataclass
class LoopSettings:
    rounds: int = 3
    judgments_per_round: int = 300
    annotators: int = 3
    gold: str = "sentiment"
    noise: float = 0.1
    algo: str | None = None
    eval_prompts: int = 48
    seed: int = 0
    gold_options: dict[str, Any] = field(default_factory=dict)  # e.g. {"keyword": "please"} for gold "keyword"
    crowd: str | None = None  # a crowd spec ("honest:3,random:1,left:1") instead of `annotators` honest ones
    # Stage 1 first (round 0): a simulated demonstrator answers this many train prompts (the best of
    # `demonstration_samples` samples by the gold, or the gold's own rewrite of it), then SFT on them.
    sft_demonstrations: int = 0
    demonstration_samples: int = 16


@dataclass
class RoundReport:
    round: int
    policy_version: int
    algo: str
    judgments: int
    rm_heldout_accuracy: float | None
    # KL per token (nats) of the new policy to the base model, and to the round's reference (the same with
    # policy.reference = "base"): PPO/GRPO's last rollouts, DPO's samples after training.
    kl_per_token: float | None
    kl_to_reference_per_token: float | None
    kl_per_sequence: float | None  # to the reference
    gold_win_rate: float  # against the base on the eval prompts (ties half)
    win_rate_vs_previous: float  # against the previous version's eval samples (round 1: the base's)
    policy_gold_mean: float
    base_gold_mean: float
    policy_length_mean: float
    reward_length_corr: float | None  # Pearson r of reward-model score and response length in training samples
    seconds: float  # the round itself: sample, (simulated) judging, reward model, policy update
    eval_seconds: float  # the gold evaluation after it (a measurement, not part of a round)
    # The round's seconds by phase: sample, judge, reward_model, policy, other (loading, saving, bookkeeping).
    phase_seconds: dict[str, float] = field(default_factory=dict)
    policy_gate: str | None = None  # why the policy was not updated this round (loop.min_reward_confidence), if so
    # The gate's evidence this round, open or closed: its reason (the counts) and its 95% lower bound.
    gate: str | None = None
    gate_lower_bound: float | None = None
    annotators: dict[str, Any] = field(default_factory=dict)  # the reward model's CrowdBT estimates, if any
    # The version this round started from (after any demotion), the gold win rate of the new version against it,
    # the versions the round found worse than their predecessor (loop.promote), and an over-optimization alarm
    # the round raised, if any.
    parent_version: int | None = None
    win_rate_vs_parent: float | None = None
    demoted: list[int] = field(default_factory=list)
    alarm: str | None = None


def shrink_for_cpu(config: Config) -> None:
    """Smaller generation and training sizes for a CPU-only demo (the loop's shape is unchanged)."""
    config.sampling.per_prompt = 4  # six pairs per prompt from four samples: a third of the generation
    config.sampling.max_new_tokens = 40
    config.sampling.batch_size = 16
    config.reward.epochs = 2
    config.policy.steps = 4
    config.policy.prompts_per_step = 4
    config.policy.max_new_tokens = 32
    config.policy.update_epochs = 1


def demo_prompt_files() -> tuple[Path, Path]:
    data = resources.files("rlhf_core") / "data"
    return Path(str(data / "demo_prompts.jsonl")), Path(str(data / "demo_eval_prompts.jsonl"))


def prepare_workspace(root: Path, *, model: str = "default", profile: str = "auto") -> Workspace:
    """A workspace with the built-in prompt set (train and eval) imported; a new one is sized by
    `profile` for this machine, as `rlhf init` does."""
    ws, _ = init_workspace(root, model=model, new_profile=profile)
    db = ws.database()
    if count_prompts(db) == 0:
        train, evaluation = demo_prompt_files()
        limit = ws.config.labeling.max_prompt_chars
        add_prompts(db, read_prompt_file(train, max_prompt_chars=limit), split="train", source="demo")
        add_prompts(db, read_prompt_file(evaluation, max_prompt_chars=limit), split="eval", source="demo")
    db.dispose()
    return ws


def simulated_demonstrations(stack: ModelStack, conversations: list[list[dict[str, str]]], gold: GoldScore, *,
                             samples: int, sampling: SamplingConfig, rewrite: GoldRewrite | None = None,
                             progress: bool = False) -> list[str | None]:
    """A simulated demonstrator: per conversation, the best of `samples` responses of the current policy by the
    gold (the first of equals), or the gold's own `rewrite` of it; None where every sample was empty."""
    flat = [c for c in conversations for _ in range(samples)]
    responses = generate_responses(stack, flat, max_new_tokens=sampling.max_new_tokens,
                                   temperature=sampling.temperature, top_p=sampling.top_p,
                                   batch_size=sampling.batch_size,
                                   progress="simulated demonstrator" if progress else None)
    answers: list[str | None] = []
    for i, conversation in enumerate(conversations):
        texts = [r[0] for r in responses[i * samples:(i + 1) * samples] if r[0].strip()]
        best = max(texts, key=lambda text: gold(conversation, text)) if texts else None
        answers.append(rewrite(conversation, best) if best is not None and rewrite else best)
    return answers


def sft_stage(ws: Workspace, db: Database, stack: ModelStack, gold: GoldScore, settings: LoopSettings, *,
              progress: bool, log: Callable[[str], None]) -> tuple[RoundReport, GoldEvaluation]:
    """Stage 1 before round 1: `settings.sft_demonstrations` train prompts (seeded) answered by the simulated
    demonstrator, stored as demonstrations, SFT on them (`rlhf train-sft`), and the gold evaluation after it
    (reported as round 0, algorithm "sft")."""
    started = time.time()
    prompts = list_prompts(db, split="train")
    chosen = random.Random(settings.seed).sample(prompts, min(settings.sft_demonstrations, len(prompts)))
    rewrite = get_gold_rewrite(settings.gold, **settings.gold_options)
    how = f"best of {settings.demonstration_samples} samples by gold '{settings.gold}'"
    log(f"stage 1: a simulated demonstrator answers {len(chosen)} train prompts ({how}"
        f"{', rewritten by the gold' if rewrite else ''})")
    conversations = [prompt_messages(p) for p in chosen]
    answers = simulated_demonstrations(stack, conversations, gold, samples=settings.demonstration_samples,
                                       sampling=ws.config.sampling, rewrite=rewrite, progress=progress)
    add_demonstrations(db, [DemonstrationSpec(c, a) for c, a in zip(conversations, answers) if a],
                       source=f"simulated demonstrator ({settings.gold})")
    written = time.time()
    log("stage 1: supervised fine-tuning on the demonstrations")
    version = run_sft_training(ws, db, stack, progress=progress)
    trained = time.time()
    ev = gold_evaluation(ws, db, stack, gold, n_prompts=settings.eval_prompts, seed=settings.seed, progress=progress)
    m = json.loads(version.metrics_json)
    report = RoundReport(
        round=0, policy_version=version.id, algo="sft", judgments=0, rm_heldout_accuracy=None,
        kl_per_token=m.get("kl_base_per_token"), kl_to_reference_per_token=m.get("kl_per_token"),
        kl_per_sequence=m.get("kl_per_sequence"), gold_win_rate=ev.win_rate, win_rate_vs_previous=ev.win_rate,
        policy_gold_mean=ev.policy_gold_mean, base_gold_mean=ev.base_gold_mean,
        policy_length_mean=ev.policy_length_mean, reward_length_corr=None, seconds=round(trained - started, 1),
        eval_seconds=round(time.time() - trained, 1),
        phase_seconds={"demonstrations": round(written - started, 3), "sft": round(trained - written, 3)})
    return report, ev


def run_loop(ws: Workspace, settings: LoopSettings, *, progress: bool = True,
             log: Callable[[str], None] = print) -> Iterator[RoundReport]:
    """Run `settings.rounds` rounds; yields a report after each."""
    db = ws.database()
    gold = get_gold(settings.gold, **settings.gold_options)
    stack = load_stack(ws)
    previous_scores: list[float] | None = None
    base_responses: list[tuple] | None = None  # the base never changes: sampled once
    version_scores: dict[int, list[float]] = {}  # each evaluated version's gold scores on the eval prompts
    if settings.sft_demonstrations > 0:  # stage 1 (round 0): simulated demonstrations, then SFT
        report, ev = sft_stage(ws, db, stack, gold, settings, progress=progress, log=log)
        base_responses, previous_scores = ev.base_responses, ev.policy_scores
        yield report
    for r in range(1, settings.rounds + 1):
        started = time.time()
        log(f"round {r}: sampling pairs from the current policy")
        sample_pairs(ws, db, stack, n_pairs=settings.judgments_per_round, progress=progress)
        sampled = time.time()
        judges = (f"the crowd {settings.crowd} judges" if settings.crowd
                  else f"{settings.annotators} simulated annotators judge")
        log(f"round {r}: {judges} by gold '{settings.gold}'")
        sim = simulate_annotators(db, annotators=settings.annotators, judgments=settings.judgments_per_round,
                                  gold=settings.gold, gold_options=settings.gold_options, noise=settings.noise,
                                  seed=settings.seed + r, kinds=("train",), progress=progress, crowd=settings.crowd,
                                  control_rate=ws.config.labeling.control_rate)  # controls, if the workspace has any
        judged = time.time()
        log(f"round {r}: training reward model and policy")
        before = {v.id: json.loads(v.metrics_json) for v in list_policies(db)}
        result = run_round(ws, db, stack, algo=settings.algo, sample_next=False, progress=progress)
        round_seconds = time.time() - started
        version = get_policy(db, result.policy_version)
        metrics = json.loads(version.metrics_json)
        after = {v.id: json.loads(v.metrics_json) for v in list_policies(db)}
        demoted = [v for v, m in after.items() if "promotion" in m and "promotion" not in before.get(v, {})]
        alarms = [m["overoptimization"] for v, m in after.items()
                  if "overoptimization" in m and "overoptimization" not in before.get(v, {})]
        phases = {"sample": sampled - started, "judge": judged - sampled,
                  "reward_model": result.metrics["reward_seconds"], "policy": result.metrics.get("policy_seconds", 0.0)}
        phases["other"] = max(0.0, round_seconds - sum(phases.values()))
        ev: GoldEvaluation = gold_evaluation(ws, db, stack, gold, n_prompts=settings.eval_prompts,
                                             seed=settings.seed, progress=progress,
                                             base_responses=base_responses)
        base_responses = ev.base_responses
        version_scores.setdefault(0, ev.base_scores)
        version_scores[version.id] = ev.policy_scores
        parent = version.parent_id if version.id else None
        parent_scores = version_scores.get(parent) if parent is not None else None
        rm_metrics = json.loads(get_reward_model(db, result.reward_model_version).metrics_json or "{}")
        gate = rm_metrics.get("policy_gate") or {}
        yield RoundReport(
            round=r, policy_version=result.policy_version, algo=version.algorithm, judgments=sim.judgments,
            rm_heldout_accuracy=result.metrics.get("rm_heldout_accuracy"),
            kl_per_token=metrics.get("kl_base_per_token", metrics.get("kl_per_token")),
            kl_to_reference_per_token=metrics.get("kl_per_token"), kl_per_sequence=metrics.get("kl_per_sequence"),
            gold_win_rate=ev.win_rate,
            win_rate_vs_previous=gold_win_rate(ev.policy_scores, previous_scores or ev.base_scores),
            policy_gold_mean=ev.policy_gold_mean, base_gold_mean=ev.base_gold_mean,
            policy_length_mean=ev.policy_length_mean, reward_length_corr=metrics.get("reward_length_corr"),
            seconds=round(round_seconds, 1), eval_seconds=round(time.time() - started - round_seconds, 1),
            phase_seconds={k: round(v, 3) for k, v in phases.items()},
            policy_gate=None if result.metrics.get("policy_updated", True) else result.metrics["policy_gate"],
            gate=gate.get("reason"), gate_lower_bound=gate.get("lower_bound"),
            annotators=rm_metrics.get("annotators", {}),
            parent_version=parent,
            win_rate_vs_parent=gold_win_rate(ev.policy_scores, parent_scores) if parent_scores and version.id else None,
            demoted=demoted, alarm=alarms[0] if alarms else None,
        )
        previous_scores = ev.policy_scores
    db.dispose()


def _num(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def format_table(reports: list[RoundReport]) -> str:
    header = (f"{'round':>5} {'policy':>6} {'algo':>5} {'judg.':>6} {'RM acc':>7} {'KL base':>8} {'KL ref':>8} "
              f"{'gold(policy)':>12} {'gold(base)':>10} {'win vs base':>11} {'win vs prev':>11} {'len':>6} "
              f"{'r(len)':>6} {'secs':>7} {'eval s':>6}")
    lines = [header, "-" * len(header)]
    for r in reports:
        lines.append(f"{r.round:>5} {'v' + str(r.policy_version):>6} {r.algo:>5} {r.judgments:>6} "
                     f"{_num(r.rm_heldout_accuracy, '.3f'):>7} {_num(r.kl_per_token, '.4f'):>8} "
                     f"{_num(r.kl_to_reference_per_token, '.4f'):>8} {r.policy_gold_mean:>12.3f} "
                     f"{r.base_gold_mean:>10.3f} {r.gold_win_rate:>11.1%} {r.win_rate_vs_previous:>11.1%} "
                     f"{r.policy_length_mean:>6.1f} {_num(r.reward_length_corr, '.2f'):>6} {r.seconds:>7.1f} "
                     f"{r.eval_seconds:>6.0f}")
    for r in reports:
        if r.phase_seconds:
            lines.append(f"round {r.round} seconds by phase: "
                         + ", ".join(f"{name.replace('_', ' ')} {s:.0f}" for name, s in r.phase_seconds.items()))
        if r.policy_gate:
            lines.append(f"round {r.round}: policy not updated, {r.policy_gate}")
        elif r.gate:
            lines.append(f"round {r.round}: policy gate open, {r.gate}")
        if r.demoted:
            lines.append(f"round {r.round}: not promoted (worse than its predecessor): "
                         + ", ".join(f"v{v}" for v in r.demoted) + f"; the round started from v{r.parent_version}")
        if r.alarm:
            lines.append(f"round {r.round}: over-optimization alarm: {r.alarm}")
    return "\n".join(lines)


def reports_json(reports: list[RoundReport]) -> str:
    return json.dumps([asdict(r) for r in reports], indent=2)
