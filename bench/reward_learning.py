"""How much does the reward model learn from each judgment? Held-out accuracy against a hidden gold
preference, per selection method and judgment budget, and for candidate reward-model settings.

    python bench/reward_learning.py --gold sentiment [--noise 0.1] [--budgets 100,200,300]
        [--selection random,uncertainty] [--candidates default,scratch-3ep,...] [--json F]

1. Responses: `--per-prompt` (4) responses per prompt are sampled once from the base model with the
   product's sampler, for the training prompts the budgets need (twice as many as the judgments
   would use, so selection has a choice) and for the held-out prompts (the built-in eval split).
2. Held-out set: every pair of distinct held-out responses the gold does not tie, labelled by the
   gold (`rlhf_core.loop.gold.get_gold`). Accuracy = share of pairs the reward model orders like the
   gold (not like the noisy labels); ECE = calibration of σ(r_a − r_b) against the simulated
   annotators' label probability (1 − noise for the gold's side), both orientations.
3. Curves: per selection method a fresh workspace on the same prompts and responses. Round by round,
   the candidate pairs of the next prompts are chosen by the method (`loop.pair_selection`: at most
   `--max-pairs` per prompt, uncertainty scored by the current reward ensemble) and stored; simulated
   annotators (noise `--noise`) judge through `next_pair_for` (most informative open pair first) up
   to the budget; the reward model is retrained on all judgments (`run_reward_training`) and measured.
4. Candidates: on the random method's final judgments, each `--candidates` setting is trained and
   measured the same way, plus a frozen-feature linear probe (logistic Bradley-Terry on the frozen
   base's pooled hidden states, L2 picked on a held-out split) as the baseline to beat (`--no-probes`
   skips them).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import random
import shutil
import sys
import tempfile
import time
from dataclasses import replace
from itertools import combinations
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _reward_probe import fit_linear_probe  # noqa: E402

from rlhf_core.algorithms.preference import expected_calibration_error  # noqa: E402
from rlhf_core.config import apply_overrides, apply_profile  # noqa: E402
from rlhf_core.loop.demo import prepare_workspace  # noqa: E402
from rlhf_core.loop.gold import get_gold  # noqa: E402
from rlhf_core.loop.pair_selection import candidate_pairs, distinct_responses, response_member_scores, select_pairs  # noqa: E402
from rlhf_core.loop.sampling import generate_responses  # noqa: E402
from rlhf_core.loop.simulate import simulate_annotators  # noqa: E402
from rlhf_core.training.reward_data import preference_examples, split_by_prompt  # noqa: E402
from rlhf_core.training.reward_model import train_reward_model  # noqa: E402
from rlhf_core.training.reward_service import run_reward_training  # noqa: E402
from rlhf_core.training.workspace_stack import activate_reward_model, load_stack  # noqa: E402
from storage import judgment_rows, list_prompts, prompt_messages, record_generations  # noqa: E402

# Reward-model settings compared by --candidates (changes from the workspace's reward config).
CANDIDATES: dict[str, dict[str, object]] = {
    "default": {},
    "scratch-3ep": {"epochs": 3, "ensemble": 1, "early_stopping": False},
    "early-stop-4ep": {"epochs": 4, "early_stopping": True},
    "lr-1e-4": {"learning_rate": 1e-4},
    "lr-5e-4": {"learning_rate": 5e-4},
    "rank-4": {"lora_r": 4, "lora_alpha": 8},
    "rank-32": {"lora_r": 32, "lora_alpha": 64},
    "ensemble-1": {"ensemble": 1},
    "ensemble-5": {"ensemble": 5},
    "mean-pool": {"pooling": "mean"},
    "last-token": {"pooling": "last"},
    "ties-davidson": {"ties": "davidson"},
    "probe-init": {"head_init": "probe"},
    "mean-lr5e-4": {"pooling": "mean", "learning_rate": 5e-4},
    "mean-lr1e-3": {"pooling": "mean", "learning_rate": 1e-3},
    "mean-lr5e-4-es3": {"pooling": "mean", "learning_rate": 5e-4, "epochs": 3, "early_stopping": True},
    "mean-lr5e-4-ens5": {"pooling": "mean", "learning_rate": 5e-4, "ensemble": 5},
    "mean-lr5e-4-probe": {"pooling": "mean", "learning_rate": 5e-4, "head_init": "probe"},
    "probe-init-mean-es": {"head_init": "probe", "pooling": "mean", "epochs": 3, "early_stopping": True},
    "by-prompt": {"group_by_prompt": True},
    "by-pair": {"group_by_prompt": False},
    "depths-0-1": {"feature_depths": [0.0, 1.0]},
    "depths-0-half-1": {"feature_depths": [0.0, 0.5, 1.0]},
    "depths-0-half-1-probe": {"feature_depths": [0.0, 0.5, 1.0], "head_init": "probe"},
    "depths-0-half-1-lr5e-4": {"feature_depths": [0.0, 0.5, 1.0], "learning_rate": 5e-4},
    "depths-0-half-1-probe-lr5e-4": {"feature_depths": [0.0, 0.5, 1.0], "head_init": "probe", "learning_rate": 5e-4},
    "last-layer-probe": {"feature_depths": [1.0], "head_init": "probe"},
    "sum-pool": {"pooling": "sum"},
    "sum-depths-0-half-1": {"pooling": "sum", "feature_depths": [0.0, 0.5, 1.0]},
    "sum-depths-0-half-1-probe": {"pooling": "sum", "feature_depths": [0.0, 0.5, 1.0], "head_init": "probe"},
    "mean-sum-depths-0-half-1-probe": {"pooling": "mean+sum", "feature_depths": [0.0, 0.5, 1.0],
                                       "head_init": "probe"},
    "mean-sum-probe": {"pooling": "mean+sum", "head_init": "probe"},
    "last-layer": {"feature_depths": [1.0]},
    "uncalibrated": {"calibrate": False},
}


def gold_heldout(conversations, texts, gold, noise: float) -> list[dict]:
    """Pairs of distinct held-out responses the gold does not tie: a/b texts and the gold's side."""
    pairs = []
    for conv, responses in zip(conversations, texts):
        scores = [gold(conv, t) for t in responses]
        for i, j in combinations(range(len(responses)), 2):
            if responses[i].strip() and responses[j].strip() and scores[i] != scores[j] and \
                    " ".join(responses[i].split()) != " ".join(responses[j].split()):
                pairs.append({"conv": conv, "a": responses[i], "b": responses[j], "a_wins": scores[i] > scores[j]})
    return pairs


def measure(stack, heldout: list[dict], noise: float, max_length: int) -> dict[str, float]:
    """Gold accuracy and ECE (vs the annotators' label probability) of the stack's reward model."""
    convs = [p["conv"] for p in heldout]
    a = response_member_scores(stack, convs, [p["a"] for p in heldout], max_length=max_length).mean(dim=1)
    b = response_member_scores(stack, convs, [p["b"] for p in heldout], max_length=max_length).mean(dim=1)
    gold = torch.tensor([p["a_wins"] for p in heldout], dtype=torch.bool)
    accuracy = float(((a > b) == gold).double().mean())
    prob_a = torch.sigmoid(a - b).double()
    label_a = torch.where(gold, 1 - noise, noise).double()
    ece = expected_calibration_error(torch.cat([prob_a, 1 - prob_a]), torch.cat([label_a, 1 - label_a]))
    return {"accuracy": accuracy, "ece": ece}


def sample_responses(ws, db, stack, prompts, per_prompt: int, progress: str) -> list[list[tuple]]:
    cfg = ws.config.sampling
    convs = [prompt_messages(p) for p in prompts for _ in range(per_prompt)]
    out = generate_responses(stack, convs, max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature,
                             top_p=cfg.top_p, batch_size=cfg.batch_size, progress=progress)
    return [out[i * per_prompt:(i + 1) * per_prompt] for i in range(len(prompts))]


def offer_pairs(ws, db, stack, prompts, responses, method: str, max_pairs: int, scored: bool) -> int:
    """Store the method's choice of pairs for these prompts (as `sample_pairs` does); returns the count."""
    n = 0
    for prompt, mine in zip(prompts, responses):
        texts = [r[0] for r in mine]
        keep, _, _ = distinct_responses(texts)
        scores = response_member_scores(stack, [prompt_messages(prompt)] * len(texts), texts,
                                        max_length=ws.config.reward.max_length) if scored else None
        chosen = select_pairs(candidate_pairs(keep), method, max_pairs, random.Random(f"offer-{prompt.id}"), scores)
        n += len(record_generations(db, prompt_id=prompt.id, policy_version_id=0, responses=mine,
                                    gen_params={"bench": "reward_learning"}, pairs=chosen.pairs,
                                    info_scores=chosen.info_scores, selection=chosen.selection))
    return n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gold", default="sentiment")
    parser.add_argument("--keyword", default=None, help="the word for --gold keyword (default: its own)")
    parser.add_argument("--noise", type=float, default=0.1)
    parser.add_argument("--budgets", default="100,200,300")
    parser.add_argument("--selection", default="random,uncertainty")
    parser.add_argument("--candidates", default="", help=f"comma list of {', '.join(CANDIDATES)}, or all")
    parser.add_argument("--no-probes", action="store_true", help="with --candidates: skip the frozen linear probes")
    parser.add_argument("--per-prompt", type=int, default=4)
    parser.add_argument("--max-pairs", type=int, default=2, help="pairs per prompt offered to people")
    parser.add_argument("--model", default="default")
    parser.add_argument("--set", action="append", default=[], metavar="reward.KEY=VALUE")
    parser.add_argument("--cache", type=Path, help="keep the sampled responses here and reuse them next time")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    started, load_before = time.perf_counter(), os.getloadavg()[0]
    budgets = [int(b) for b in args.budgets.split(",")]
    methods = [m for m in args.selection.split(",") if m]
    gold = get_gold(args.gold, **({"keyword": args.keyword} if args.keyword else {}))

    base_root = Path(tempfile.mkdtemp(prefix="rlhf-reward-bench-"))
    ws = prepare_workspace(base_root / "pool", model=args.model)
    apply_profile(ws.config, "auto")
    apply_overrides(ws.config, args.set)
    db = ws.database()
    stack = load_stack(ws)
    train_prompts = list_prompts(db, split="train")
    rng = random.Random(0)
    rng.shuffle(train_prompts)
    steps = [b - a for a, b in zip([0, *budgets], budgets)]
    per_round = [2 * math.ceil(s / args.max_pairs) for s in steps]
    pool = train_prompts[:sum(per_round)]
    eval_prompts = list_prompts(db, split="eval")
    print(f"sampling {args.per_prompt} responses for {len(pool)} training and {len(eval_prompts)} held-out prompts")
    cache = args.cache / f"responses-{args.model.replace('/', '_')}-{len(pool)}-{args.per_prompt}.json" \
        if args.cache else None
    if cache is not None and cache.is_file():
        cached = json.loads(cache.read_text())
        responses, heldout_responses = cached["train"], cached["heldout"]
    else:
        responses = sample_responses(ws, db, stack, pool, args.per_prompt, "train pool")
        heldout_responses = sample_responses(ws, db, stack, eval_prompts, args.per_prompt, "held-out")
        if cache is not None:
            cache.parent.mkdir(parents=True, exist_ok=True)
            cache.write_text(json.dumps({"train": responses, "heldout": heldout_responses}))
    heldout = gold_heldout([prompt_messages(p) for p in eval_prompts],
                           [[t for t, _ in r] for r in heldout_responses], gold, args.noise)
    print(f"held-out: {len(heldout)} gold-ordered pairs; sampling took {time.perf_counter() - started:.0f} s")

    curves: dict[str, list[dict]] = {}
    databases = {}
    for method in methods:
        root = base_root / method
        shutil.copytree(base_root / "pool", root, ignore=shutil.ignore_patterns("adapters"))
        mws = replace(ws, root=root, config=copy.deepcopy(ws.config))
        mdb = mws.database()
        databases[method] = (mws, mdb)
        stack.reset_adapter("reward")
        offset = 0
        for step, budget in enumerate(budgets):
            chunk = slice(offset, offset + per_round[step])
            offset += per_round[step]
            scored = method == "uncertainty" and activate_reward_model(stack, mdb) is not None
            offer_pairs(mws, mdb, stack, pool[chunk], responses[chunk], method, args.max_pairs, scored)
            have = len(judgment_rows(mdb))
            simulate_annotators(mdb, annotators=3, judgments=budget - have, gold=gold, noise=args.noise,
                                seed=step, kinds=("train",), progress=False)
            t0 = time.perf_counter()
            run_reward_training(mws, mdb, stack, progress=False)
            rows = judgment_rows(mdb)
            row = {"judgments": len(rows), "decisive": sum(r.choice in ("a", "b") for r in rows),
                   **measure(stack, heldout, args.noise, ws.config.reward.max_length),
                   "seconds": round(time.perf_counter() - t0, 1)}
            curves.setdefault(method, []).append(row)
            print(f"  {method:<12} {row['judgments']:>4} judgments ({row['decisive']} decisive): gold accuracy "
                  f"{row['accuracy']:.3f}, ECE {row['ece']:.3f} (reward model {row['seconds']} s)", flush=True)

    candidates: dict[str, dict] = {}
    names = list(CANDIDATES) if args.candidates == "all" else [c for c in args.candidates.split(",") if c]
    if names or args.candidates:
        mws, mdb = databases.get("random", next(iter(databases.values())))
        examples, _ = preference_examples(judgment_rows(mdb, kinds=("train",)))
        for name in names:
            cfg = replace(ws.config.reward, **CANDIDATES[name])
            train, held = split_by_prompt(examples, cfg.eval_fraction, cfg.seed)
            run_stack = stack
            if "lora_r" in CANDIDATES[name]:  # another LoRA shape: a stack loaded with it
                rank_ws = replace(ws, config=copy.deepcopy(ws.config))
                rank_ws.config.reward = cfg
                run_stack = load_stack(rank_ws)
            run_stack.reset_adapter("reward")
            t0 = time.perf_counter()
            train_reward_model(run_stack, train, held, cfg, progress=False)
            candidates[name] = {**measure(run_stack, heldout, args.noise, cfg.max_length),
                                "seconds": round(time.perf_counter() - t0, 1), "judgments": len(examples)}
            print(f"  candidate {name:<14} gold accuracy {candidates[name]['accuracy']:.3f}, "
                  f"ECE {candidates[name]['ece']:.3f} ({candidates[name]['seconds']} s)", flush=True)
        probes = [] if args.no_probes else [("last", (1.0,)), ("mean", (1.0,)), ("mean", (0.0, 0.5, 1.0)),
                                            ("sum", (0.0, 0.5, 1.0))]
        for pooling, depths in probes:
            t0 = time.perf_counter()
            l2 = fit_linear_probe(stack, examples, pooling=pooling, max_length=ws.config.reward.max_length,
                                  depths=depths)
            name = f"linear-probe-{pooling}" + ("" if depths == (1.0,) else "-depths-" + "-".join(map(str, depths)))
            candidates[name] = {**measure(stack, heldout, args.noise, ws.config.reward.max_length),
                                "judgments": len(examples), "l2": l2, "seconds": round(time.perf_counter() - t0, 1)}
            print(f"  candidate {name:<14} gold accuracy {candidates[name]['accuracy']:.3f}, "
                  f"ECE {candidates[name]['ece']:.3f} ({candidates[name]['seconds']} s)", flush=True)

    print(f"\ngold {args.gold}, noise {args.noise}; {len(heldout)} held-out pairs; load average "
          f"{load_before:.2f} before, {os.getloadavg()[0]:.2f} after; {time.perf_counter() - started:.0f} s")
    print(f"{'method':<14}" + "".join(f"{b:>16}" for b in budgets))
    for method, rows in curves.items():
        print(f"{method:<14}" + "".join(f"{r['accuracy']:>9.3f} ({r['ece']:.3f})" for r in rows))
    if "random" in curves and "uncertainty" in curves:
        target = curves["random"][-1]["accuracy"]
        reach = next((r["judgments"] for r in curves["uncertainty"] if r["accuracy"] >= target), None)
        print(f"uncertainty reaches random's {curves['random'][-1]['judgments']}-judgment accuracy ({target:.3f}) "
              f"with {reach if reach is not None else 'more than ' + str(budgets[-1])} judgments")
    if args.json:
        args.json.write_text(json.dumps({"gold": args.gold, "noise": args.noise, "curves": curves,
                                         "candidates": candidates, "heldout_pairs": len(heldout),
                                         "load_average": [load_before, os.getloadavg()[0]]}, indent=2))
        print(f"figures written to {args.json}")


if __name__ == "__main__":
    main()
