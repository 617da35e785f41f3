"""Does the loop work? Rounds of (sample -> simulated judgments -> reward model -> policy update) on
the default model, measured against the base with the hidden gold preference on held-out prompts.

    python bench/loop_efficacy.py                       # 3 rounds, <= 300 judgments each, gold=sentiment
    python bench/loop_efficacy.py --gold shorter --algo ppo --rounds 2 --judgments 200

Prints per round: reward-model held-out accuracy, KL to the reference (per token and per sequence),
mean gold score of policy and base samples, gold win rate of policy vs base, wall time.
Target (issue): gold win rate >= 70% after round 3 with KL per token bounded (here: <= --kl-bound).
`--set policy.max_kl_per_token=X` stops a round's policy updates once the policy drifts that far.
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rlhf_core.loop.demo import LoopSettings, format_table, prepare_workspace, reports_json, run_loop  # noqa: E402


def _nats(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="default", help="'default' (SmolLM2-135M-Instruct) or a local model dir")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--judgments", type=int, default=300, help="simulated judgments per round (at most)")
    parser.add_argument("--annotators", type=int, default=3)
    parser.add_argument("--gold", default="sentiment", help="sentiment | longer | shorter | keyword")
    parser.add_argument("--noise", type=float, default=0.1, help="label noise of the simulated annotators")
    parser.add_argument("--algo", default=None, help="ppo or grpo (default: the workspace config, grpo)")
    parser.add_argument("--eval-prompts", type=int, default=48)
    parser.add_argument("--workspace", type=Path, default=None, help="default: a new temp dir")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override a config value, e.g. --set policy.steps=12 (repeatable)")
    parser.add_argument("--json", type=Path, default=None, help="also write the per-round figures here")
    parser.add_argument("--kl-bound", type=float, default=0.1,
                        help="KL per token (nats) the last round must stay under to count as bounded (default 0.1)")
    args = parser.parse_args()

    root = args.workspace or Path(tempfile.mkdtemp(prefix="rlhf-loop-bench-"))
    ws = prepare_workspace(root, model=args.model)
    for item in args.set:
        key, _, value = item.partition("=")
        section, _, name = key.partition(".")
        target = getattr(ws.config, section)
        current = getattr(target, name)
        setattr(target, name, type(current)(value) if not isinstance(current, bool) else value == "true")
    settings = LoopSettings(rounds=args.rounds, judgments_per_round=args.judgments, annotators=args.annotators,
                            gold=args.gold, noise=args.noise, algo=args.algo, eval_prompts=args.eval_prompts)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    print(f"loop efficacy: model={args.model} device={device} threads={torch.get_num_threads()} "
          f"torch={torch.__version__} python={platform.python_version()} gold={args.gold} noise={args.noise} "
          f"algo={args.algo or ws.config.policy.algo}")
    print(f"policy config: {ws.config.policy}")
    started = time.time()
    reports = []
    for report in run_loop(ws, settings, progress=True, log=print):
        reports.append(report)
        print(format_table(reports), flush=True)
    print(f"\ntotal wall time {time.time() - started:.0f} s; workspace {ws.root}")
    if reports:
        last = reports[-1]
        bounded = last.kl_per_token is not None and last.kl_per_token <= args.kl_bound
        verdict = "PASS" if last.gold_win_rate >= 0.70 and bounded else "MISS"
        print(f"target gold win rate >= 70% after round {last.round} with KL per token <= {args.kl_bound}: "
              f"{last.gold_win_rate:.1%}, KL {_nats(last.kl_per_token)} nats/token ({verdict})")
    if args.json:
        args.json.write_text(reports_json(reports))


if __name__ == "__main__":
    main()
