"""Best-of-N on arithmetic, and the process reward model's step accuracy (issue 40, point 6).

Arithmetic chains ("Start at 12, add 7, multiply by 3.") with known answers. On the train prompts the base policy
samples responses and, beside them, worked chains with a share of wrong steps stand for a policy that writes
`a + b = c` lines; simulated annotators label every step with the arithmetic step gold (`rlhf simulate-steps`'s
path) and a PRM is trained on them (`rlhf train-prm`'s service): its step accuracy on the held-out prompts' step
labels is printed beside the majority label's. A reward model is trained on --judgments simulated judgments of the
sampled pairs and of pairs of worked chains (honest annotators preferring the response whose final number is nearer
the answer; one without a number loses). Then, on the eval
prompts, the base answers greedily and samples N answers, kept by the reward functions (the answer check, with
TRL's signature), by the PRM and by the reward model; the table gives each one's accuracy (the last number of the
kept answer is the answer) and pass@N (some answer right) as the ceiling.

    python bench/best_of_n.py                                   # the default model, 64 + 32 prompts, best of 8
    python bench/best_of_n.py --ops 1 --n 8 --json bon.json     # one operation per problem
    python bench/best_of_n.py --smoke                           # the code paths on a tiny model, in seconds
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _smoke import add_smoke_option, apply_smoke  # noqa: E402

from rlhf_core.config import apply_overrides  # noqa: E402
from rlhf_core.loop.sampling import sample_pairs  # noqa: E402
from rlhf_core.service.best_of_n import ScoringContext, best_of_n  # noqa: E402
from rlhf_core.simulator.simulate import simulate_annotators  # noqa: E402
from rlhf_core.simulator.steps import arithmetic_problem, simulate_step_labels, worked_chain  # noqa: E402
from rlhf_core.training.prm_service import run_prm_training  # noqa: E402
from rlhf_core.training.reward_service import run_reward_training  # noqa: E402
from rlhf_core.training.workspace_stack import load_stack  # noqa: E402
from rlhf_core.workspace import init_workspace  # noqa: E402
from storage import add_prompts, list_prompts, prompt_messages, record_generations  # noqa: E402

SOURCE = "arith.jsonl"
LAST_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def final_number(text: str) -> float | None:
    """The number after the last "Answer:", else the last number of the text; None without one."""
    tail = text.rsplit("Answer:", 1)[-1] if "Answer:" in text else text
    found = LAST_NUMBER.findall(tail)
    return float(found[-1]) if found else None


def answer_check(prompts: list, completions: list, answer: list, **columns: object) -> list[float | None]:
    """A reward function with TRL's signature: 1 when the completion's final number is the `answer` column's."""
    out = []
    for completion, expected in zip(completions, answer):
        value = final_number(completion[0]["content"])
        out.append(None if expected is None else float(value is not None and abs(value - float(expected)) < 1e-6))
    return out


def fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "n/a"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="default", help="'default' (SmolLM2-135M-Instruct) or a model directory")
    parser.add_argument("--prompts", type=int, default=64, help="train prompts (step labels, judgments)")
    parser.add_argument("--eval-prompts", type=int, default=32, help="prompts best-of-N is measured on")
    parser.add_argument("--ops", type=int, default=2, help="operations per problem")
    parser.add_argument("--n", type=int, default=8, help="N of best-of-N")
    parser.add_argument("--per-prompt", type=int, default=4, help="sampled responses per train prompt")
    parser.add_argument("--chains", type=int, default=2, help="worked chains per train prompt (step-labeled too)")
    parser.add_argument("--error-rate", type=float, default=0.3, help="share of wrong steps in the worked chains")
    parser.add_argument("--judgments", type=int, default=300, help="simulated judgments for the reward model")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workspace", type=Path, default=None, help="default: a new temporary directory")
    parser.add_argument("--set", action="append", default=[], help="section.key=value over rlhf.toml")
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    add_smoke_option(parser)
    args = parser.parse_args()
    apply_smoke(args, tiny_model="model", prompts=8, eval_prompts=4, n=3, per_prompt=3, chains=2, judgments=16)
    smoke_sets = ["sampling.max_new_tokens=12", "reward.epochs=1", "prm.epochs=1", "loop.min_reward_confidence=0"]
    started = time.perf_counter()

    root = args.workspace or Path(tempfile.mkdtemp(prefix="rlhf-bon-"))
    ws, _ = init_workspace(root, model=args.model, new_profile="auto")
    ws.config.labeling.step_sets = [SOURCE]
    ws.config.sampling.per_prompt = args.per_prompt
    apply_overrides(ws.config, [*args.set, *(smoke_sets if args.smoke else [])])
    db = ws.database()
    rng = random.Random(args.seed)
    problems = [arithmetic_problem(rng, args.ops) for _ in range(args.prompts + args.eval_prompts)]
    train, held = problems[:args.prompts], problems[args.prompts:]
    add_prompts(db, [[{"role": "user", "content": p.question}] for p in train], split="train", source=SOURCE)
    add_prompts(db, [[{"role": "user", "content": p.question}] for p in held], split="eval", source=SOURCE)
    answers = {p.question: p.answer for p in problems}
    stack = load_stack(ws)
    print(f"model {ws.config.model.name}; {len(train)} train and {len(held)} eval problems of {args.ops} operations; "
          f"load average {loadavg()}", flush=True)

    show = not args.smoke  # progress bars on the long phases of a real run

    def phase(text: str) -> None:
        print(f"[{time.perf_counter() - started:6.0f} s] {text}", flush=True)

    phase(f"sampling {len(train) * args.per_prompt} pairs from the base policy")
    sampled = sample_pairs(ws, db, stack, n_pairs=len(train) * args.per_prompt, progress=show)
    ids = {prompt_messages(p)[0]["content"]: p.id for p in list_prompts(db, split="train")}
    for p in train:  # worked chains beside the samples: responses whose steps are right or wrong
        chains = ["\n".join(worked_chain(p, rng, args.error_rate)) for _ in range(args.chains)]
        record_generations(db, prompt_id=ids[p.question], policy_version_id=0, responses=[(c, 0) for c in chains],
                           gen_params={"simulated": "worked chain"},
                           pairs=[(i, i + 1) for i in range(0, len(chains) - 1, 2)])  # judged like samples
    labeled = simulate_step_labels(db, ws.config, labels=10**6, annotators=2)
    phase(f"training the PRM on {labeled.labels} step-labeled responses")
    prm = run_prm_training(ws, db, stack, progress=show)
    prm_metrics = json.loads(prm.metrics_json)

    def nearer(messages: list, text: str) -> float:
        value = final_number(text)
        return -1e9 if value is None else -abs(value - answers[messages[-1]["content"]])

    judged = simulate_annotators(db, annotators=3, judgments=args.judgments, gold=nearer, seed=args.seed,
                                 progress=False)
    phase(f"training the reward model on {judged.judgments} judgments")
    rm = run_reward_training(ws, db, stack, progress=show)

    conversations = [[{"role": "user", "content": p.question}] for p in held]
    columns = [{"answer": p.answer} for p in held]
    cfg = ws.config.sampling
    ctx = ScoringContext(ws, db, stack, functions=answer_check)
    phase(f"greedy answers to {len(held)} eval problems")
    greedy = best_of_n(ctx, conversations, n=1, by="functions", columns=columns, max_new_tokens=cfg.max_new_tokens,
                       temperature=0.0)
    rows = {"greedy": [c.best.score or 0.0 for c in greedy]}
    pass_at_n = None
    for by in ("functions", "prm", "rm"):
        phase(f"best of {args.n} by {by}")
        results = best_of_n(ctx, conversations, n=args.n, by=by, columns=columns, max_new_tokens=cfg.max_new_tokens,
                            temperature=cfg.temperature, top_p=cfg.top_p, seed=args.seed)
        checks = [answer_check([c], [[{"role": "assistant", "content": r.best.text}]], [p.answer])[0]
                  for c, r, p in zip(conversations, results, held)]
        rows[f"best of {args.n} by {by}"] = checks
        if pass_at_n is None:  # every scorer sees the same seeded samples
            pass_at_n = [max(c.score or 0.0 for c in r.candidates) for r in results]
    rows[f"pass@{args.n} (some answer right)"] = pass_at_n

    accuracy = {name: sum(v) / len(v) for name, v in rows.items()}
    print(f"\nstep labels: {labeled.labels} responses ({sampled.samples} sampled, {len(train) * args.chains} worked "
          f"chains), {labeled.steps} steps, {labeled.bad} bad")
    print(f"PRM v{prm.id}: held-out step accuracy {fmt(prm_metrics['heldout_step_accuracy'])} on "
          f"{prm_metrics['heldout_steps']} steps (majority label {fmt(prm_metrics['heldout_majority_accuracy'])})")
    print(f"reward model v{rm.id}: {judged.judgments} judgments, held-out accuracy {fmt(rm.heldout_accuracy)}")
    print(f"\n{'answers kept':<34}{'accuracy':>9}   (eval problems: {len(held)})")
    for name, value in accuracy.items():
        print(f"{name:<34}{value:>8.1%}")
    seconds = time.perf_counter() - started
    print(f"\n{seconds:.0f} s; load average {loadavg()}")
    if args.json:
        args.json.write_text(json.dumps({
            "model": ws.config.model.name, "ops": args.ops, "n": args.n, "train_prompts": len(train),
            "eval_prompts": len(held), "accuracy": accuracy, "prm": prm_metrics, "judgments": judged.judgments,
            "reward_model_heldout_accuracy": rm.heldout_accuracy, "step_labels": labeled.labels,
            "seconds": round(seconds, 1), "loadavg": loadavg()}, indent=2))
    db.dispose()


if __name__ == "__main__":
    main()
