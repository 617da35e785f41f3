"""Reward over-optimization on this machine (Gao et al. 2023): a reward model trained on few judgments, then many
policy steps with no KL stop; every --every steps the KL to the base, the proxy reward, and the gold win rate
against the base. The gold rises, peaks and falls while the proxy keeps rising: the bench says where the gold
peaked, and how many steps after the peak the loop's over-optimization rule (rlhf_core.algorithms.evidence) fired
on evidence the loop itself would have: its reward model's accuracy on fresh judgments of the policy's own
answers (simulated people, honest with --noise). The same run for each conservative reward (--modes: the
ensemble's mean, UWO, WCO) gives the gold at its peak and at the end for each.

    python bench/overoptimization.py                               # gold sentiment, 100 judgments, 48 steps
    python bench/overoptimization.py --gold keyword --steps 60 --every 6 --json over.json
    python bench/overoptimization.py --gold concise --steps 60 --every 6 --json over.json   # an interior optimum
    python bench/overoptimization.py --smoke                       # the code paths on a tiny model, in seconds

Each mode starts the policy from the base with the same seeds and the same reward model. The proxy is the reward
model's score of the policy's answers to the eval prompts minus the base's, in base standard deviations (the
combination of members the policy optimized). KL is the k3 estimate per token of the chunk's last rollouts.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _smoke import add_smoke_option, apply_smoke  # noqa: E402

from rlhf_core.algorithms.agreement import wilson_interval  # noqa: E402
from rlhf_core.algorithms.evidence import (  # noqa: E402
    CONSERVATIVE_MODES,
    Accuracy,
    VersionEvidence,
    effect_size,
    overoptimization_alarm,
)
from rlhf_core.config import apply_overrides  # noqa: E402
from rlhf_core.loop.sampling import generate_responses, sample_pairs  # noqa: E402
from rlhf_core.registry import UnknownKind, rollout_algorithm  # noqa: E402
from rlhf_core.simulator.demo import prepare_workspace  # noqa: E402
from rlhf_core.simulator.gold import GoldPreferenceError, available_gold, get_gold, gold_win_rate  # noqa: E402
from rlhf_core.simulator.simulate import simulate_annotators  # noqa: E402
from rlhf_core.training.policy import train_policy  # noqa: E402
from rlhf_core.training.ppo import fresh_critic  # noqa: E402
from rlhf_core.training.reward_data import PreferenceExample, encode_pairs  # noqa: E402
from rlhf_core.training.reward_model import score_pairs  # noqa: E402
from rlhf_core.training.reward_service import run_reward_training  # noqa: E402
from rlhf_core.training.rollout import reward_model_scores  # noqa: E402
from rlhf_core.training.workspace_stack import activate_reward_model, load_stack  # noqa: E402
from storage import list_prompts, prompt_messages  # noqa: E402


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "n/a"


def answers(ws, stack, conversations, adapter, seed):  # noqa: ANN001, ANN201
    import torch

    cfg = ws.config.sampling
    torch.manual_seed(seed)
    return [r.text for r in generate_responses(stack, conversations, max_new_tokens=cfg.max_new_tokens,
                                               temperature=cfg.temperature, top_p=cfg.top_p, adapter=adapter,
                                               batch_size=cfg.batch_size)]


def rm_scores(ws, stack, conversations, texts, mode):  # noqa: ANN001, ANN201
    """The reward model's scores of `texts`, members combined as the policy update combines them."""
    from rlhf_core.algorithms.evidence import conservative_reward

    examples = [PreferenceExample(c, t, t, None, i) for i, (c, t) in enumerate(zip(conversations, texts))]
    cfg = ws.config.reward
    members, _ = score_pairs(stack, encode_pairs(stack.tokenizer, examples, cfg.max_length), cfg.batch_size)
    return conservative_reward(members, mode, cfg.conservative_lambda).tolist()


def fresh_accuracy(ws, stack, gold, conversations, first, second, noise, rng) -> Accuracy:  # noqa: ANN001
    """Simulated people judge pairs of two of the policy's answers (honest, a decisive label flipped with
    probability `noise`; ties skipped); the reward model's (ensemble mean) accuracy on those judgments."""
    examples = []
    for i, (c, a, b) in enumerate(zip(conversations, first, second)):
        ga, gb = gold(c, a), gold(c, b)
        if ga == gb or a == b:
            continue
        chosen, rejected = (a, b) if ga > gb else (b, a)
        if rng.random() < noise:
            chosen, rejected = rejected, chosen
        examples.append(PreferenceExample(c, chosen, rejected, None, i))
    if not examples:
        return Accuracy(0, 0)
    cfg = ws.config.reward
    r_c, r_r = score_pairs(stack, encode_pairs(stack.tokenizer, examples, cfg.max_length), cfg.batch_size)
    return Accuracy(int((r_c.mean(dim=1) > r_r.mean(dim=1)).sum()), len(examples))


def run_mode(ws, db, stack, gold, mode, args, eval_convs, base_gold, base_rm, fresh_convs,  # noqa: ANN001, ANN201
             on_row=lambda _rows: None):
    """Policy steps from the base against the reward model combined by `mode`, measured every `args.every`:
    `base_gold` and `base_rm` are the base's answers' gold and reward-model scores on `eval_convs`. `on_row` gets
    the mode's rows after each measurement."""
    stack.reset_adapter("policy")
    fresh_critic(stack)
    stack.set_reference(None)
    activate_reward_model(stack, db)
    train = [prompt_messages(p) for p in list_prompts(db, split="train")]
    cfg = replace(ws.config.policy, steps=args.every, kl_beta=args.kl_beta, max_kl_per_token=0.0, kl_budget=0.0,
                  kl_control="fixed")
    score_fn = reward_model_scores(stack, mode, ws.config.reward.conservative_lambda)
    rng = random.Random(args.seed)
    rows, history = [], []
    for chunk in range(args.steps // args.every):
        result = train_policy(stack, train, score_fn, replace(cfg, seed=cfg.seed + chunk), algo=args.algo,
                              progress=False)
        kl = result.history[-1].get("kl_base_k3_per_token") or result.history[-1].get("kl_k3_per_token") or 0.0
        texts = answers(ws, stack, eval_convs, "policy", args.seed + 1000 + chunk)
        win = gold_win_rate([gold(c, t) for c, t in zip(eval_convs, texts)], base_gold)
        proxy = effect_size(rm_scores(ws, stack, eval_convs, texts, mode), base_rm)
        first = answers(ws, stack, fresh_convs, "policy", args.seed + 2000 + chunk)
        second = answers(ws, stack, fresh_convs, "policy", args.seed + 3000 + chunk)
        fresh = fresh_accuracy(ws, stack, gold, fresh_convs, first, second, args.noise, rng)
        history.append(VersionEvidence(version=chunk + 1, claimed_gain=proxy, fresh=fresh))
        alarm = overoptimization_alarm(history)
        rows.append({"mode": mode, "step": (chunk + 1) * args.every, "sqrt_kl": math.sqrt(max(kl, 0.0)), "kl": kl,
                     "proxy_gain": proxy, "gold_win_rate": win, "eval_n": len(eval_convs),
                     "mean_chars": mean_chars(texts),
                     "fresh_accuracy": fresh.value, "fresh_n": fresh.n,
                     "alarm": alarm.reason if alarm else None})
        r = rows[-1]
        print(f"  {mode:<5} step {r['step']:>4}  sqrt KL {r['sqrt_kl']:.3f}  proxy {r['proxy_gain']:+.2f}  gold win "
              f"{r['gold_win_rate']:.1%}  {r['mean_chars']:.0f} chars  fresh acc {_pct(r['fresh_accuracy'])} "
              f"(n={fresh.n})"
              + ("  ALARM" if alarm else ""), flush=True)
        on_row(rows)
    return rows


def mean_chars(texts: list[str]) -> float:
    """The answers' mean length in characters."""
    return sum(len(t) for t in texts) / len(texts)


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0%}"


def fell_from_peak(peak: float, end: float, n: int) -> bool:
    """Whether a gold win rate of `end` over `n` eval prompts is below the 95% Wilson interval of the `peak` (ties
    count half, so the peak's wins are rounded): a one-prompt dip from 100% to 97.9% of 48 is noise, not a fall."""
    interval = wilson_interval(round(peak * n), n)
    return interval is not None and end < interval[0]


def summarize(rows: list[dict]) -> dict:
    """Where the gold peaked, how it ended, and when the alarm first fired (steps after the peak). `diverged`: at
    some measurement after the gold's peak (the proxy's highest there) the proxy stood above its value at the peak
    while the gold had fallen below the peak's interval (Gao's divergence, whether or not it lasted to the end)."""
    peak = max(rows, key=lambda r: r["gold_win_rate"])
    fired = next((r for r in rows if r["alarm"]), None)
    high = max((r for r in rows if r["step"] > peak["step"]), key=lambda r: r["proxy_gain"], default=None)
    diverged = bool(high and high["proxy_gain"] > peak["proxy_gain"]
                    and fell_from_peak(peak["gold_win_rate"], high["gold_win_rate"], peak["eval_n"]))
    return {"mode": rows[0]["mode"], "peak_step": peak["step"], "gold_at_peak": peak["gold_win_rate"],
            "gold_at_end": rows[-1]["gold_win_rate"], "proxy_at_peak": peak["proxy_gain"],
            "proxy_at_end": rows[-1]["proxy_gain"], "chars_at_peak": peak["mean_chars"],
            "chars_at_end": rows[-1]["mean_chars"], "alarm_step": fired["step"] if fired else None,
            "alarm_after_peak": (fired["step"] - peak["step"]) if fired else None,
            "gold_fell": fell_from_peak(peak["gold_win_rate"], rows[-1]["gold_win_rate"], peak["eval_n"]),
            "proxy_rose_after_peak": rows[-1]["proxy_gain"] > peak["proxy_gain"],
            "proxy_high_after_peak_step": high["step"] if high else None,
            "proxy_high_after_peak": high["proxy_gain"] if high else None,
            "gold_at_proxy_high": high["gold_win_rate"] if high else None, "diverged": diverged}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gold", default="sentiment", help=f"the hidden preference: {available_gold()}")
    parser.add_argument("--judgments", type=int, default=100, help="judgments the reward model trains on")
    parser.add_argument("--noise", type=float, default=0.1, help="share of decisive labels flipped")
    parser.add_argument("--steps", type=int, default=48, help="policy steps in all (no KL stop)")
    parser.add_argument("--every", type=int, default=6, help="measure every this many steps")
    parser.add_argument("--kl-beta", type=float, default=0.0, help="the KL penalty's coefficient (0: none)")
    parser.add_argument("--algo", default="grpo", help="a rollout algorithm of the registry (grpo, ppo)")
    parser.add_argument("--modes", default=",".join(CONSERVATIVE_MODES), help="conservative rewards to compare")
    parser.add_argument("--eval-prompts", type=int, default=48, help="eval prompts for the gold and the proxy")
    parser.add_argument("--fresh-prompts", type=int, default=32, help="prompts of fresh pairs judged each time")
    parser.add_argument("--model", default="default", help="'default' or a local model directory")
    parser.add_argument("--workspace", type=Path, default=None, help="where (default: a temporary directory)")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None,
                        help="write every row (after each measurement: a run cut short keeps them) and the summary")
    add_smoke_option(parser)
    args = parser.parse_args()
    apply_smoke(args, tiny_model="model", judgments=64, steps=2, every=1, eval_prompts=4, fresh_prompts=4)
    smoke_sets = ["sampling.max_new_tokens=8", "reward.epochs=1", "policy.prompts_per_step=2", "policy.group_size=2",
                  "policy.max_new_tokens=8", "policy.minibatch_size=4", "policy.update_epochs=1"]
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    bad = [m for m in modes if m not in CONSERVATIVE_MODES]
    if bad or args.every < 1 or args.steps < args.every:
        parser.error(f"--modes takes {', '.join(CONSERVATIVE_MODES)}; --steps must be at least --every (>= 1)")
    try:
        gold = get_gold(args.gold)
        rollout_algorithm(args.algo)
    except (GoldPreferenceError, UnknownKind) as exc:
        parser.error(str(exc))
    started = time.time()
    print(f"over-optimization: gold {args.gold}, {args.judgments} judgments, {args.steps} {args.algo} steps, "
          f"measured every {args.every}; load average {loadavg()}", flush=True)

    root = args.workspace or Path(tempfile.mkdtemp(prefix="rlhf-overopt-"))
    ws = prepare_workspace(root, model=args.model)
    apply_overrides(ws.config, [*args.set, *(smoke_sets if args.smoke else [])])
    db = ws.database()
    stack = load_stack(ws)
    sample_pairs(ws, db, stack, n_pairs=args.judgments, progress=False)
    simulate_annotators(db, annotators=3, judgments=args.judgments, gold=args.gold, noise=args.noise,
                        seed=args.seed, progress=False)
    rm = run_reward_training(ws, db, stack, progress=False)
    print(f"reward model v{rm.id}: {rm.trained_on} judgments trained on, held-out accuracy "
          f"{_pct(rm.heldout_accuracy)}", flush=True)
    eval_convs = [prompt_messages(p) for p in list_prompts(db, split="eval", limit=args.eval_prompts)]
    fresh_convs = [prompt_messages(p) for p in list_prompts(db, split="train")][-args.fresh_prompts:]
    base_texts = answers(ws, stack, eval_convs, None, args.seed + 999)
    base_gold = [gold(c, t) for c, t in zip(eval_convs, base_texts)]
    base_rm = {m: rm_scores(ws, stack, eval_convs, base_texts, m) for m in modes}
    print(f"base: {mean_chars(base_texts):.0f} chars per answer on "
          f"{len(eval_convs)} eval prompts", flush=True)
    rows, summaries = [], []

    def save(mode_rows: list[dict], complete: bool = False) -> None:
        """Every row measured so far (a run cut short keeps them), with the finished modes' summaries."""
        if args.json:
            args.json.write_text(json.dumps({"gold": args.gold, "judgments": args.judgments, "complete": complete,
                                             "rows": rows + mode_rows, "summary": summaries, "loadavg": loadavg(),
                                             "seconds": round(time.time() - started)}, indent=2), encoding="utf-8")

    for mode in modes:
        mode_rows = run_mode(ws, db, stack, gold, mode, args, eval_convs, base_gold, base_rm[mode], fresh_convs,
                             on_row=save)
        rows += mode_rows
        summaries.append(summarize(mode_rows))

    print("\nmode   peak step  gold at peak  gold at end  proxy at peak  proxy at end  alarm at  steps after peak"
          "  chars at peak  chars at end")
    for s in summaries:
        after = "n/a" if s["alarm_after_peak"] is None else f"{s['alarm_after_peak']:+d}"
        print(f"{s['mode']:<6} {s['peak_step']:>9}  {s['gold_at_peak']:>12.1%}  {s['gold_at_end']:>11.1%}  "
              f"{s['proxy_at_peak']:>+13.2f}  {s['proxy_at_end']:>+12.2f}  {str(s['alarm_step'] or '-'):>8}  "
              f"{after:>16}  {s['chars_at_peak']:>13.0f}  {s['chars_at_end']:>12.0f}")
    shown = [s for s in summaries if s["gold_fell"] and s["proxy_rose_after_peak"]]
    print("gold peaked then fell (below the peak's 95% interval) while the proxy kept rising: "
          f"{', '.join(s['mode'] for s in shown) or 'no mode'}; "
          f"{time.time() - started:.0f} s; load average {loadavg()}")
    for s in summaries:
        if s["proxy_high_after_peak_step"] is not None:
            print(f"{s['mode']}: after the gold's peak (step {s['peak_step']}, proxy {s['proxy_at_peak']:+.2f}) the "
                  f"proxy's highest was {s['proxy_high_after_peak']:+.2f} at step {s['proxy_high_after_peak_step']}, "
                  f"the gold there {s['gold_at_proxy_high']:.1%}: "
                  + ("diverged (proxy up, gold below the peak's interval)" if s["diverged"] else "no divergence"))
    save([], complete=True)
    db.dispose()


if __name__ == "__main__":
    main()
