"""How much does the reward model learn from each judgment? Held-out accuracy against a hidden gold
preference, per selection method and judgment budget, and for candidate reward-model settings.

    python bench/reward_learning.py --gold sentiment [--noise 0.1] [--budgets 100,200,300]
        [--selection random,uncertainty] [--candidates default,scratch-3ep,...] [--json F]
    python bench/reward_learning.py --crowd honest:5 --crowd honest:3,random:1,left:1 --budgets 300
        --annotator-models none,threshold,crowd_bt --crowdkit --seeds 3
    python bench/reward_learning.py --gold sentiment --selection random --prior 1000   # with/without a prior
    python bench/reward_learning.py --gold sentiment --selection random --judge accuracy=0.75 \
        --judge accuracy=0.55,runs=routed --judge accuracy=0.75,left_bias=0.5,runs=routed [--hf-judge default]
        # AI judges (bench/_judges.py)
    python bench/reward_learning.py --smoke       # seconds: the tiny model, budgets 8,16, responses of 8 tokens

1. Responses: `--per-prompt` (4) responses per prompt are sampled once from the base model with the
   product's sampler, for the training prompts the budgets need (twice as many as the judgments
   would use, so selection has a choice) and for the held-out prompts (the built-in eval split).
2. Held-out set: every pair of distinct held-out responses the gold does not tie, labelled by the
   gold (`rlhf_core.simulator.gold.get_gold`). Accuracy = share of pairs the reward model orders like the
   gold (not like the noisy labels); ECE = calibration of σ(r_a − r_b) against the simulated
   annotators' label probability (1 − noise for the gold's side), both orientations.
3. Curves: per selection method a fresh workspace on the same prompts and responses. Round by round,
   the candidate pairs of the next prompts are chosen by the method (`loop.pair_selection`: at most
   `--max-pairs` per prompt, uncertainty scored by the current reward ensemble) and stored; simulated
   annotators (noise `--noise`) judge through `next_pair_for` (most informative open pair first) up
   to the budget; the reward model is retrained on all judgments (`run_reward_training`) and measured.
   With `--crowd SPEC` (repeatable) the judges are that simulated crowd (`rlhf_core.simulator.crowd`) instead of
   three honest annotators, pairs are selected at random (so every annotator model sees the same
   judgments), and each crowd is run per `--annotator-models` entry (`reward.annotator_model`) and seed
   (`--seeds`: the simulation's and the reward model's); the table gives mean ± standard error over seeds,
   and crowd_bt's estimated η of each annotator beside its true kind. `--crowdkit` adds the baseline:
   the crowd's labels aggregated by crowd-kit's BradleyTerry and NoisyBradleyTerry, one label per pair,
   trained on with the workspace's reward settings (`bench/_crowd.py`; on seed 0's judgments); `--oracle`
   trains on the honest annotators' judgments alone, what a perfect annotator model could keep.
4. Candidates: on the random method's final judgments, each `--candidates` setting is trained and
   measured the same way, plus a frozen-feature linear probe (logistic Bradley-Terry on the frozen
   base's pooled hidden states, L2 picked on a held-out split) as the baseline to beat (`--no-probes`
   skips them).
5. Prior (`--prior N`): each selection method runs again on a workspace that also holds N prior judgments
   (`rlhf preferences import`, weighted by `reward.prior_weight`): pairs of `--prior-per-prompt` base-model
   responses on training prompts the judgments never use, labelled by the same gold with the same noise
   (`bench/_prior.py`). Printed: how many judgments with the prior reach the accuracy the last budget
   reaches without it.
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

from _crowd import CROWDKIT_METHODS, crowdkit_examples, eta_rows, honest_above_the_rest, mean_se  # noqa: E402
from _prior import prior_dataset  # noqa: E402
from _reward_probe import fit_linear_probe  # noqa: E402
from _smoke import add_smoke_option, apply_smoke  # noqa: E402

from rlhf_core.algorithms.preference import expected_calibration_error  # noqa: E402
from rlhf_core.config import apply_overrides, apply_profile  # noqa: E402
from rlhf_core.loop.pair_selection import candidate_pairs, distinct_responses, response_member_scores, select_pairs  # noqa: E402
from rlhf_core.loop.sampling import generate_responses  # noqa: E402
from rlhf_core.simulator.crowd import kind_of  # noqa: E402
from rlhf_core.simulator.demo import prepare_workspace  # noqa: E402
from rlhf_core.simulator.gold import get_gold  # noqa: E402
from rlhf_core.simulator.simulate import simulate_annotators  # noqa: E402
from rlhf_core.training.reward_data import preference_examples, split_by_prompt  # noqa: E402
from rlhf_core.training.reward_model import train_reward_model  # noqa: E402
from rlhf_core.training.reward_service import run_reward_training  # noqa: E402
from rlhf_core.training.workspace_stack import activate_reward_model, load_stack  # noqa: E402
from storage import (  # noqa: E402
    add_prior_preferences,
    current_reward_model,
    judgment_rows,
    list_prompts,
    prompt_messages,
    record_generations,
)

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
    parser.add_argument("--gold", default=None, help="default: sentiment; a smoke run's: longer (random words tie)")
    parser.add_argument("--keyword", default=None, help="the word for --gold keyword (default: its own)")
    parser.add_argument("--noise", type=float, default=0.1)
    parser.add_argument("--budgets", default="100,200,300")
    parser.add_argument("--selection", default="random,uncertainty")
    parser.add_argument("--candidates", default="", help=f"comma list of {', '.join(CANDIDATES)}, or all")
    parser.add_argument("--no-probes", action="store_true", help="with --candidates: skip the frozen linear probes")
    parser.add_argument("--per-prompt", type=int, default=4)
    parser.add_argument("--heldout-prompts", type=int, default=0, help="held-out prompts (default 0: the eval split)")
    parser.add_argument("--max-pairs", type=int, default=2, help="pairs per prompt offered to people")
    parser.add_argument("--model", default="default")
    parser.add_argument("--set", action="append", default=[], metavar="reward.KEY=VALUE")
    parser.add_argument("--cache", type=Path, help="keep the sampled responses here and reuse them next time")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--crowd", action="append", default=[], metavar="SPEC",
                        help="a simulated crowd, e.g. honest:3,random:1,left:1 (repeatable); random pair selection")
    parser.add_argument("--annotator-models", default="", help="with --crowd: comma list of reward.annotator_model "
                        "values (default: the workspace's)")
    parser.add_argument("--seeds", type=int, default=1, help="with --crowd: runs per crowd and annotator model")
    parser.add_argument("--crowdkit", action="store_true", help="with --crowd: the crowd-kit aggregation baseline")
    parser.add_argument("--oracle", action="store_true",
                        help="with --crowd: also train on the honest annotators' judgments alone (an upper bound)")
    parser.add_argument("--prior", type=int, default=0, metavar="N", help="each selection method again with N "
                        "gold-labelled prior judgments on other prompts (a simulated existing dataset)")
    parser.add_argument("--prior-per-prompt", type=int, default=6, help="with --prior: responses per prior prompt")
    parser.add_argument("--judge", action="append", default=[], metavar="SPEC", help="a simulated AI judge, e.g. "
                        "accuracy=0.75,left_bias=0.5[,runs=every/routed/alone] (repeatable): people vs people "
                        "and judge (bench/_judges.py)")
    parser.add_argument("--hf-judge", default=None, metavar="MODEL", help="with --judge: a local LM as an hf judge "
                        "too ('default': the embedded SmolLM2), its kappa with the simulated people")
    add_smoke_option(parser)
    args = parser.parse_args()
    apply_smoke(args, tiny_model="model", budgets="8,16", seeds=1, prior=min(args.prior, 16), heldout_prompts=8,
                judge=args.judge or ["accuracy=0.75"],
                gold=args.gold or "longer", set=[*args.set, "sampling.max_new_tokens=8", "reward.epochs=1"])
    args.gold = args.gold or "sentiment"
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
    eval_prompts = list_prompts(db, split="eval")[:args.heldout_prompts or None]
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
                           [[t[0] for t in r] for r in heldout_responses], gold, args.noise)
    print(f"held-out: {len(heldout)} gold-ordered pairs; sampling took {time.perf_counter() - started:.0f} s")

    curves: dict[str, list[dict]] = {}
    databases = {}
    models = [m for m in args.annotator_models.split(",") if m] or [ws.config.reward.annotator_model]
    runs = [(m, None, None, 0) for m in methods] if not args.crowd else \
        [("random", c, m, seed) for c in args.crowd for seed in range(args.seeds) for m in models]
    meta: dict[str, dict] = {}
    priors = []
    if args.prior > 0:  # the same methods again, each on a workspace that also holds the prior dataset
        prior_cache = args.cache / f"prior-{args.prior_per_prompt}.json" if args.cache else None
        priors = prior_dataset(ws, stack, train_prompts[len(pool):], args.prior, gold, args.noise,
                               args.prior_per_prompt, prior_cache)
        print(f"prior dataset: {len(priors)} gold-labelled pairs on prompts the judgments never use")
        runs += [(f"{m}+prior", None, None, 0) for m in methods] if not args.crowd else []
    for method, crowd, model, seed in runs:
        name = method if crowd is None else f"{crowd} | {model} | seed {seed}"
        method, with_prior = method.removesuffix("+prior"), method.endswith("+prior")
        root = base_root / (name if crowd is None else f"crowd-{len(databases)}")
        shutil.copytree(base_root / "pool", root, ignore=shutil.ignore_patterns("adapters"))
        mws = replace(ws, root=root, config=copy.deepcopy(ws.config))
        if crowd is not None:
            mws.config.reward.annotator_model, mws.config.reward.seed = model, seed
            meta[name] = {"crowd": crowd, "model": model, "seed": seed}
        mdb = mws.database()
        if with_prior:
            add_prior_preferences(mdb, priors, source="simulated prior dataset")
        databases[name] = (mws, mdb)
        stack.reset_adapter("reward")
        offset = 0
        for step, budget in enumerate(budgets):
            chunk = slice(offset, offset + per_round[step])
            offset += per_round[step]
            scored = method == "uncertainty" and activate_reward_model(stack, mdb) is not None
            offer_pairs(mws, mdb, stack, pool[chunk], responses[chunk], method, args.max_pairs, scored)
            have = len(judgment_rows(mdb))
            simulate_annotators(mdb, annotators=3, crowd=crowd, judgments=budget - have, gold=gold, noise=args.noise,
                                seed=step + 1000 * seed, kinds=("train",), progress=False)
            t0 = time.perf_counter()
            run_reward_training(mws, mdb, stack, progress=False)
            rows = judgment_rows(mdb)
            row = {"judgments": len(rows), "decisive": sum(r.choice in ("a", "b") for r in rows),
                   **measure(stack, heldout, args.noise, ws.config.reward.max_length),
                   "seconds": round(time.perf_counter() - t0, 1)}
            if crowd is not None:
                row["annotators"] = json.loads(current_reward_model(mdb).metrics_json).get("annotators")
            curves.setdefault(name, []).append(row)
            print(f"  {name:<12} {row['judgments']:>4} judgments ({row['decisive']} decisive): gold accuracy "
                  f"{row['accuracy']:.3f}, ECE {row['ece']:.3f} (reward model {row['seconds']} s)", flush=True)

    baselines = [*(CROWDKIT_METHODS if args.crowdkit else ()), *(["oracle"] if args.oracle else [])]
    for name in [n for n in meta if meta[n]["model"] == models[0]] if baselines else []:
        mws, mdb = databases[name]
        for method in baselines:
            rows = judgment_rows(mdb, kinds=("train",))
            if method == "oracle" and {kind_of(r.annotator) for r in rows} == {"honest"}:
                continue  # an all-honest crowd is its own oracle
            if method != "oracle" and meta[name]["seed"] > 0:
                continue  # crowd-kit on seed 0's judgments: with one judgment per pair it keeps each label as it is
            if method == "oracle":  # what a perfect annotator model could keep: the honest annotators' judgments
                examples, workers = preference_examples([r for r in rows if kind_of(r.annotator) == "honest"])[0], {}
            else:
                examples, workers = crowdkit_examples(rows, method)
            train, held = split_by_prompt(examples, mws.config.reward.eval_fraction, mws.config.reward.seed)
            stack.reset_adapter("reward")
            t0 = time.perf_counter()
            train_reward_model(stack, train, held, mws.config.reward, progress=False)
            row = {"judgments": budgets[-1], "decisive": len(examples), "workers": workers,
                   **measure(stack, heldout, args.noise, ws.config.reward.max_length),
                   "seconds": round(time.perf_counter() - t0, 1)}
            label = "oracle (honest only)" if method == "oracle" else f"crowd-kit {method}"
            run = f"{meta[name]['crowd']} | {label} | seed {meta[name]['seed']}"
            meta[run] = {**meta[name], "model": label}
            curves[run] = [row]
            print(f"  {run}: {len(examples)} pairs, gold accuracy {row['accuracy']:.3f}", flush=True)

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

    judge_rows: list[dict] = []
    if args.judge:  # people and simulated AI judges through the real judge path (bench/_judges.py)
        from types import SimpleNamespace

        from _judges import judge_scenarios, print_judge_table

        print_judge_table(judge_rows := judge_scenarios(SimpleNamespace(
            base_root=base_root, ws=ws, stack=stack, gold=gold, noise=args.noise, budgets=budgets,
            offer=lambda mws, mdb: offer_pairs(mws, mdb, stack, pool, responses, "random", args.max_pairs, False),
            measure=lambda: measure(stack, heldout, args.noise, ws.config.reward.max_length)),
            args.judge, args.hf_judge))
    print(f"\ngold {args.gold}, noise {args.noise}; {len(heldout)} held-out pairs; load average "
          f"{load_before:.2f} before, {os.getloadavg()[0]:.2f} after; {time.perf_counter() - started:.0f} s")
    if meta:
        print_crowd_table(curves, meta, budgets)
    if any(method not in meta for method in curves):
        print(f"{'method':<14}" + "".join(f"{b:>16}" for b in budgets))
    for method, rows in curves.items():
        if method not in meta:
            print(f"{method:<14}" + "".join(f"{r['accuracy']:>9.3f} ({r['ece']:.3f})" for r in rows))
    for method in [m for m in curves if m.endswith("+prior") and m.removesuffix("+prior") in curves]:
        plain, target = curves[method.removesuffix("+prior")], curves[method.removesuffix("+prior")][-1]
        reach = next((r["judgments"] for r in curves[method] if r["accuracy"] >= target["accuracy"]), None)
        print(f"{method}: with {len(priors)} prior judgments, {reach or 'more than ' + str(budgets[-1])} judgments "
              f"reach the accuracy {target['judgments']} reach without them ({target['accuracy']:.3f}); first "
              f"budget {curves[method][0]['accuracy']:.3f} vs {plain[0]['accuracy']:.3f}")
    if "random" in curves and "uncertainty" in curves:
        target = curves["random"][-1]["accuracy"]
        reach = next((r["judgments"] for r in curves["uncertainty"] if r["accuracy"] >= target), None)
        print(f"uncertainty reaches random's {curves['random'][-1]['judgments']}-judgment accuracy ({target:.3f}) "
              f"with {reach if reach is not None else 'more than ' + str(budgets[-1])} judgments")
    if args.json:
        args.json.write_text(json.dumps({"gold": args.gold, "noise": args.noise, "curves": curves, "runs": meta,
                                         "candidates": candidates, "judges": judge_rows,
                                         "heldout_pairs": len(heldout),
                                         "load_average": [load_before, os.getloadavg()[0]]}, indent=2))
        print(f"figures written to {args.json}")


def print_crowd_table(curves: dict[str, list[dict]], meta: dict[str, dict], budgets: list[int]) -> None:
    """Per crowd and annotator model: gold accuracy per budget, mean ± SE over seeds (crowd-kit: the last budget
    only); then each annotator's estimated η beside its kind (crowd_bt, seed 0), and NoisyBradleyTerry's."""
    groups: dict[tuple[str, str], list[str]] = {}
    for name, m in meta.items():
        groups.setdefault((m["crowd"], m["model"]), []).append(name)
    print(f"{'crowd':<30} {'annotator model':<28}" + "".join(f"{b:>18}" for b in budgets) + "  seeds")
    for (crowd, model), names in groups.items():
        cells = []
        for i in range(len(budgets)):
            # Rows align on the last budget (a crowd-kit run has only that one).
            values = [curves[n][i - len(budgets) + len(curves[n])]["accuracy"] for n in names
                      if i >= len(budgets) - len(curves[n])]
            mean, se = mean_se(values) if values else (None, None)
            cells.append(f"{mean:>10.3f} ± {se:.3f}" if values else f"{'-':>18}")
        print(f"{crowd:<30} {model:<28}" + "".join(f"{c:>18}" for c in cells) + f"  {len(names)}")
    for (crowd, model), names in groups.items():
        last = curves[names[0]][-1]
        if last.get("annotators"):
            print(f"\n{crowd}, {model}, seed 0: estimated η per annotator after {last['judgments']} judgments "
                  f"(every random/adversarial/left one below every honest one: "
                  f"{honest_above_the_rest(last['annotators'])})")
            print("\n".join(eta_rows(last["annotators"])))
        if last.get("workers"):
            print(f"\n{crowd}, {model}, seed 0: " + ", ".join(
                f"{w} skill {v['skill']:.2f} left {v['left_bias']:.2f}" for w, v in sorted(last["workers"].items())))


if __name__ == "__main__":
    main()
