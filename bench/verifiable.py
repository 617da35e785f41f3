"""Rewards that can be checked (RLVR): accuracy on the shipped verifiable prompt set after GRPO rounds scored by
the reward functions alone (loop.mode = "verifiable"), and by the functions plus a reward model learned from
simulated judgments (annotators who check the answer), against the base model.

    python bench/verifiable.py                         # base, then 3 rounds each way; 300 judgments per round
    python bench/verifiable.py --base-only             # the base model's accuracy on the whole set (train + eval)
    python bench/verifiable.py --configs functions --rounds 2 --json runs.json
    python bench/verifiable.py --smoke                 # a tiny model and sizes: the code paths, in seconds

Accuracy is the `correct` function's mean (answer_match on each prompt's answer column) over greedy answers to the
held-out eval prompts; `answer_only` is the share of answers that are the answer alone (format_regex). KL per
token to the base is the last quarter of each round's rollouts (k1 estimate, the training log's). Prints a table
per configuration and the verdict against the target (+20 points of accuracy over the base, issue 40).
`--json F` writes one row per (configuration, round): config, round, policy_version, accuracy, answer_only,
tokens, kl_base_per_token, judgments, seconds, loadavg.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _smoke import add_smoke_option, apply_smoke  # noqa: E402

from rlhf_core.config import apply_overrides, dump_config  # noqa: E402
from rlhf_core.loop.rounds import run_round  # noqa: E402
from rlhf_core.loop.sampling import sample_pairs  # noqa: E402
from rlhf_core.simulator.simulate import simulate_annotators  # noqa: E402
from rlhf_core.simulator.verifiable import greedy_scores, prepare_verifiable_workspace, verifier_gold  # noqa: E402
from rlhf_core.training.workspace_stack import load_stack  # noqa: E402
from storage import get_policy  # noqa: E402

CONFIGS = {"functions": "verifiable", "functions+rm": "standard"}
TARGET_POINTS = 20.0
SMOKE_SETTINGS = ("sampling.max_new_tokens=8", "sampling.batch_size=16", "reward.epochs=1", "policy.steps=1",
                  "policy.prompts_per_step=2", "policy.group_size=2", "policy.max_new_tokens=8",
                  "policy.minibatch_size=4", "policy.update_epochs=1", "loop.min_reward_confidence=0",
                  "loop.probe_prompts=0", "policy.kl_budget=0")


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "n/a"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--judgments", type=int, default=300, help="simulated judgments per round (functions+rm)")
    parser.add_argument("--annotators", type=int, default=3)
    parser.add_argument("--noise", type=float, default=0.1, help="share of decisive judgments flipped")
    parser.add_argument("--configs", default="functions,functions+rm", help=f"of {', '.join(CONFIGS)}")
    parser.add_argument("--eval-prompts", type=int, default=64)
    parser.add_argument("--answer-tokens", type=int, default=24, help="most tokens of a greedy eval answer")
    parser.add_argument("--model", default="default")
    parser.add_argument("--workspace", type=Path, help="a folder for the workspaces (default: a temporary one)")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    parser.add_argument("--base-only", action="store_true", help="only the base model's accuracy on train + eval")
    parser.add_argument("--json", type=Path)
    add_smoke_option(parser)
    args = parser.parse_args()
    unknown = [c for c in args.configs.split(",") if c not in CONFIGS]
    if unknown:
        parser.error(f"--configs: unknown {', '.join(unknown)} (known: {', '.join(CONFIGS)})")
    apply_smoke(args, tiny_model="model", rounds=1, judgments=12, eval_prompts=4, answer_tokens=8,
                set=[*args.set, *SMOKE_SETTINGS])
    return args


def prepare(root: Path, args: argparse.Namespace, mode: str):  # noqa: ANN201 - (Workspace, Database)
    ws = prepare_verifiable_workspace(root, model=args.model, profile="auto", mode=mode)
    apply_overrides(ws.config, args.set)
    (ws.root / "rlhf.toml").write_text(dump_config(ws.config), encoding="utf-8")
    return ws, ws.database()


def base_accuracy(root: Path, args: argparse.Namespace) -> None:
    """The base model's greedy accuracy on the whole set, per task kind (train and eval together)."""
    from rlhf_core.simulator.verifiable import verifiable_prompt_files
    from storage import add_prompts

    ws, db = prepare(root / "base", args, "verifiable")
    for path in verifiable_prompt_files()[:1]:  # the train file joins the eval split for this measurement
        from rlhf_core.data.prompt_files import read_prompt_records

        records = read_prompt_records(path, max_prompt_chars=ws.config.labeling.max_prompt_chars)
        add_prompts(db, [m for m, _ in records], split="eval", source="train-as-eval", columns=[c for _, c in records])
    stack = load_stack(ws)
    started = time.time()
    scores = greedy_scores(ws, db, stack, 0, limit=100_000, max_new_tokens=args.answer_tokens)
    print(f"base accuracy on the whole set: correct {scores['correct']:.1%}, answer_only {scores['answer_only']:.1%}, "
          f"mean answer {scores['tokens']:.1f} tokens ({time.time() - started:.0f} s, load {loadavg()})")


def run_config(name: str, root: Path, args: argparse.Namespace) -> list[dict[str, Any]]:
    ws, db = prepare(root / name.replace("+", "-"), args, CONFIGS[name])
    stack = load_stack(ws)
    rows = []
    base = greedy_scores(ws, db, stack, 0, limit=args.eval_prompts, max_new_tokens=args.answer_tokens)
    rows.append({"config": name, "round": 0, "policy_version": 0, "accuracy": base["correct"],
                 "answer_only": base["answer_only"], "tokens": base["tokens"], "kl_base_per_token": 0.0,
                 "judgments": 0, "seconds": 0.0, "loadavg": loadavg()})
    gold = verifier_gold(ws, db, tie_break=1e-3 if args.smoke else 0.0)
    for number in range(1, args.rounds + 1):
        started = time.time()
        judged = 0
        if CONFIGS[name] == "standard":  # pairs from the current policy, judged by annotators who check answers
            sample_pairs(ws, db, stack, n_pairs=args.judgments // ws.config.labeling.judgments_per_pair,
                         progress=False)
            judged = simulate_annotators(db, annotators=args.annotators, judgments=args.judgments, gold=gold,
                                         noise=args.noise, seed=number, progress=False).judgments
        result = run_round(ws, db, stack, sample_next=False, progress=False)
        seconds = time.time() - started
        metrics = json.loads(get_policy(db, result.policy_version).metrics_json)
        scores = greedy_scores(ws, db, stack, result.policy_version, limit=args.eval_prompts,
                               max_new_tokens=args.answer_tokens)
        rows.append({"config": name, "round": number, "policy_version": result.policy_version,
                     "accuracy": scores["correct"], "answer_only": scores["answer_only"], "tokens": scores["tokens"],
                     "kl_base_per_token": metrics.get("kl_base_per_token"), "judgments": judged,
                     "seconds": round(seconds, 1), "loadavg": loadavg(), "policy_gate": metrics.get("policy_gate")})
    db.dispose()
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    lines = [f"{'config':<13}{'round':>6}{'policy':>8}{'accuracy':>10}{'answer only':>13}{'tokens':>8}"
             f"{'KL/token':>10}{'judgments':>11}{'seconds':>9}"]
    for r in rows:
        kl = "n/a" if r["kl_base_per_token"] is None else f"{r['kl_base_per_token']:.4f}"
        lines.append(f"{r['config']:<13}{r['round']:>6}{'v' + str(r['policy_version']):>8}{r['accuracy']:>10.1%}"
                     f"{r['answer_only']:>13.1%}{r['tokens']:>8.1f}{kl:>10}{r['judgments']:>11}{r['seconds']:>9.0f}")
    return "\n".join(lines)


def main() -> None:
    args = parse_args()
    root = args.workspace or Path(tempfile.mkdtemp(prefix="rlhf-bench-verifiable-"))
    print(f"workspaces under {root}; load average {loadavg()}", flush=True)
    if args.base_only:
        base_accuracy(root, args)
        return
    all_rows = []
    for name in args.configs.split(","):
        rows = run_config(name, root, args)
        all_rows += rows
        print(f"\n[{name}]\n{table(rows)}", flush=True)
        gain = 100 * (rows[-1]["accuracy"] - rows[0]["accuracy"])
        print(f"{name}: accuracy {rows[0]['accuracy']:.1%} -> {rows[-1]['accuracy']:.1%} ({gain:+.1f} points) after "
              f"{args.rounds} rounds; target +{TARGET_POINTS:.0f}: {'met' if gain >= TARGET_POINTS else 'not met'}",
              flush=True)
    if args.json:
        args.json.write_text(json.dumps(all_rows, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
