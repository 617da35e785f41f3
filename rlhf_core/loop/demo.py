"""The loop end to end with simulated annotators: `rlhf demo` and `bench/loop_efficacy.py`.

Each round samples pairs from the current policy, lets simulated annotators judge them by a
hidden gold preference (through the same storage path as people), retrains the reward model,
updates the policy, and measures the policy against the base on held-out eval prompts.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path

from rlhf_core.config import Config
from rlhf_core.data.prompt_files import read_prompt_file
from rlhf_core.loop.evaluation import GoldEvaluation, gold_evaluation
from rlhf_core.loop.gold import get_gold
from rlhf_core.loop.rounds import run_round
from rlhf_core.loop.sampling import sample_pairs
from rlhf_core.loop.simulate import simulate_annotators
from rlhf_core.training.workspace_stack import load_stack
from rlhf_core.workspace import Workspace, init_workspace
from storage import add_prompts, count_prompts, get_policy


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


@dataclass
class RoundReport:
    round: int
    policy_version: int
    judgments: int
    rm_heldout_accuracy: float | None
    kl_per_token: float | None
    kl_per_sequence: float | None
    gold_win_rate: float
    policy_gold_mean: float
    base_gold_mean: float
    policy_length_mean: float
    seconds: float


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


def prepare_workspace(root: Path, *, model: str = "default") -> Workspace:
    """A workspace with the built-in prompt set (train and eval) imported."""
    ws, _ = init_workspace(root, model=model)
    db = ws.database()
    if count_prompts(db) == 0:
        train, evaluation = demo_prompt_files()
        limit = ws.config.labeling.max_prompt_chars
        add_prompts(db, read_prompt_file(train, max_prompt_chars=limit), split="train", source="demo")
        add_prompts(db, read_prompt_file(evaluation, max_prompt_chars=limit), split="eval", source="demo")
    db.dispose()
    return ws


def run_loop(ws: Workspace, settings: LoopSettings, *, progress: bool = True,
             log: Callable[[str], None] = print) -> Iterator[RoundReport]:
    """Run `settings.rounds` rounds; yields a report after each."""
    db = ws.database()
    gold = get_gold(settings.gold)
    stack = load_stack(ws)
    for r in range(1, settings.rounds + 1):
        started = time.time()
        log(f"round {r}: sampling pairs from the current policy")
        sample_pairs(ws, db, stack, n_pairs=settings.judgments_per_round, progress=progress)
        log(f"round {r}: {settings.annotators} simulated annotators judge by gold '{settings.gold}'")
        sim = simulate_annotators(db, annotators=settings.annotators, judgments=settings.judgments_per_round,
                                  gold=settings.gold, noise=settings.noise, seed=settings.seed + r,
                                  kinds=("train",), progress=progress)
        log(f"round {r}: training reward model and policy")
        result = run_round(ws, db, stack, algo=settings.algo, sample_next=False, progress=progress)
        metrics = json.loads(get_policy(db, result.policy_version).metrics_json)
        ev: GoldEvaluation = gold_evaluation(ws, db, stack, gold, n_prompts=settings.eval_prompts,
                                             seed=settings.seed, progress=progress)
        yield RoundReport(
            round=r, policy_version=result.policy_version, judgments=sim.judgments,
            rm_heldout_accuracy=metrics.get("rm_heldout_accuracy"), kl_per_token=metrics.get("kl_per_token"),
            kl_per_sequence=metrics.get("kl_per_sequence"), gold_win_rate=ev.win_rate,
            policy_gold_mean=ev.policy_gold_mean, base_gold_mean=ev.base_gold_mean,
            policy_length_mean=ev.policy_length_mean, seconds=round(time.time() - started, 1),
        )
    db.dispose()


def format_table(reports: list[RoundReport]) -> str:
    header = (f"{'round':>5} {'policy':>6} {'judg.':>6} {'RM acc':>7} {'KL/tok':>8} {'KL/seq':>8} "
              f"{'gold(policy)':>12} {'gold(base)':>10} {'win vs base':>11} {'len':>6} {'secs':>7}")
    lines = [header, "-" * len(header)]
    for r in reports:
        acc = "-" if r.rm_heldout_accuracy is None else f"{r.rm_heldout_accuracy:.3f}"
        kl = "-" if r.kl_per_token is None else f"{r.kl_per_token:.4f}"
        kls = "-" if r.kl_per_sequence is None else f"{r.kl_per_sequence:.3f}"
        lines.append(f"{r.round:>5} {'v' + str(r.policy_version):>6} {r.judgments:>6} {acc:>7} {kl:>8} {kls:>8} "
                     f"{r.policy_gold_mean:>12.3f} {r.base_gold_mean:>10.3f} {r.gold_win_rate:>11.1%} "
                     f"{r.policy_length_mean:>6.1f} {r.seconds:>7.1f}")
    return "\n".join(lines)


def reports_json(reports: list[RoundReport]) -> str:
    return json.dumps([asdict(r) for r in reports], indent=2)
