"""Training-step cost, ours against TRL (installed as the benchmark-only extra `rlhf-loop[bench]`).

    python bench/train_step.py                         # SmolLM2-135M-Instruct, CPU or CUDA
    python bench/train_step.py --model tiny            # the tiny test model: a fast sanity run
    python bench/train_step.py --only grpo --steps 5 --repeats 2 --json out.json

On the same model, data and hyper-parameters it measures
  1. seconds per reward-model step: `train_reward_model` vs TRL's RewardTrainer (Bradley-Terry, LoRA);
  2. seconds per GRPO step (rollout generation + scoring + update): `train_policy(algo="grpo")` vs
     TRL's GRPOTrainer, both scored by the same length function (no reward-model forward on either side);
  3. peak memory of one PPO step (rollout + update): our one base with the policy/value/reward
     adapters vs four separate models (policy, reference, reward model, critic);
  4. seconds per SFT step on demonstrations: `train_sft` vs TRL's SFTTrainer (completion-only loss, LoRA).
Every measurement runs in its own fresh worker process (`_train_step_workers.py`); with --repeats the
ours/theirs order alternates between rounds. Prints ours/theirs ratios.
Targets (issue 13): time ratio <= 0.8 for both; PPO memory ratio <= 0.4. Issue 31: SFT step time ratio <= 0.8.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from _train_step_settings import BenchSettings

# This process never imports torch: it stays small, so a worker's peak RSS (which can inherit the
# parent's high-water mark across fork/exec) measures the worker alone.
WORKERS = Path(__file__).resolve().with_name("_train_step_workers.py")
TIME_TARGET = 0.8
MEMORY_TARGET = 0.4
GROUPS = {"reward": ("reward-ours", "reward-trl"), "grpo": ("grpo-ours", "grpo-trl"),
          "ppo-memory": ("ppo-shared", "ppo-separate"), "sft": ("sft-ours", "sft-trl")}


@dataclass
class Row:
    name: str
    ours: float
    theirs: float
    unit: str
    target: float | None  # None: shown for information, no target

    @property
    def ratio(self) -> float:
        return self.ours / self.theirs

    @property
    def verdict(self) -> str:
        if self.target is None:
            return "(info)"
        return "pass" if self.ratio <= self.target else "FAIL"


def run_worker(task: str, payload: str, *, verbose: bool) -> dict:
    """Run one measurement in a fresh process; its output is shown only on failure (or with --verbose)."""
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "TRANSFORMERS_VERBOSITY": "error",
           "PYTHONWARNINGS": "ignore"}
    started = time.perf_counter()
    print(f"  {task:<13} ...", end="", flush=True)
    with tempfile.TemporaryDirectory(prefix="train-step-") as tmp:
        out = Path(tmp) / "result.json"
        quiet = {} if verbose else {"stdout": subprocess.PIPE, "stderr": subprocess.STDOUT}
        proc = subprocess.run([sys.executable, str(WORKERS), task, payload, str(out)], env=env, text=True, **quiet)
        if proc.returncode != 0:
            print(" failed")
            if proc.stdout:
                print(proc.stdout[-6000:], file=sys.stderr)
            raise SystemExit(f"worker {task} exited with status {proc.returncode}")
        result = json.loads(out.read_text())
    print(f" done in {time.perf_counter() - started:.0f} s (1-min load average {os.getloadavg()[0]:.1f})", flush=True)
    return result


def merge(runs: list[dict]) -> dict:
    """One task's repeats: timed steps pooled; memory peaks kept per run (the median is reported)."""
    merged = dict(runs[0])
    for key in ("seconds", "cpu_seconds"):
        if key in merged:
            merged[key] = [x for run in runs for x in run[key]]
    if "peak_mb" in merged:
        merged["peak_mb_runs"] = [run["peak_mb"] for run in runs]
        merged["peak_mb"] = median(merged["peak_mb_runs"])
    return merged


def median(values: list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def table_rows(results: dict[str, dict]) -> list[Row]:
    rows = []
    for group, name in (("reward", "reward-model step"), ("grpo", "GRPO step (rollout + score + update)"),
                        ("sft", "SFT step (answer tokens only)")):
        ours, theirs = results.get(f"{group}-ours"), results.get(f"{group}-trl")
        if ours and theirs:
            rows.append(Row(name, median(ours["seconds"]), median(theirs["seconds"]), "s/step", TIME_TARGET))
            rows.append(Row("  same, process CPU time", median(ours["cpu_seconds"]), median(theirs["cpu_seconds"]),
                            "CPU s/step", None))
    if "ppo-shared" in results:
        rows.append(Row("PPO step peak memory", results["ppo-shared"]["peak_mb"], results["ppo-separate"]["peak_mb"],
                        "MiB", MEMORY_TARGET))
    return rows


def format_table(rows: list[Row]) -> str:
    header = f"{'measurement':<48} {'ours':>10} {'theirs':>10} {'ratio':>7} {'target':>8}  result"
    lines = [header, "-" * len(header)]
    for r in rows:
        digits = 3 if r.unit.endswith("/step") else 0
        target = "-" if r.target is None else f"<= {r.target}"
        lines.append(f"{r.name + ' (' + r.unit + ')':<48} {r.ours:>10.{digits}f} {r.theirs:>10.{digits}f} "
                     f"{r.ratio:>7.2f} {target:>8}  {r.verdict}")
    return "\n".join(lines)


def describe(env: dict, s: BenchSettings, results: dict, args: argparse.Namespace) -> str:
    """The environment and the method, in the words a reader of the table needs."""
    versions = ", ".join(f"{k} {env[k]}" for k in ("torch", "transformers", "trl", "peft", "bitsandbytes") if k in env)
    load = env["load_average"]
    threads = s.threads or env["threads"]
    lines = [
        f"environment: {env['device']}, {threads} torch threads, python {env['python']}; {versions}; "
        f"1-min load average {load['before']:.1f} before, {load['after']:.1f} after (other processes on the "
        "machine make wall times noisy; compare the per-step figures below)",
        f"model: {s.model_label} ({s.model_dir}), {s.precision}; LoRA r={s.lora_r} alpha={s.lora_alpha} dropout 0 on "
        f"q,k,v,o,gate,up,down on both sides; activation checkpointing: "
        + {"defaults": "each side's default (ours: only batches >= 8192 tokens; TRL: on)", "on": "on, both sides",
           "off": "off, both sides"}[s.checkpointing]
        + f"; ours decodes with its own sampler (model.generation = {s.generation}); torch AdamW, grad-norm clip 1.0",
    ]
    if "reward-ours" in results or "grpo-ours" in results or "sft-ours" in results:
        lines.append(
            f"timing: median over {args.repeats} run(s) x {s.steps} timed steps, after {s.warmup} warm-up step(s) "
            "per run; each run in a fresh process; loading and trainer setup are not timed. TRL: a TrainerCallback "
            "(on_step_begin -> on_step_end); ours: the time between its per-step reports.")
    if "reward-ours" in results:
        lines.append(f"reward model: {s.batch_size} synthetic preference pairs per step, the same token ids (our "
                     f"encode_pairs, max length {s.max_length}) in the same batches and order on both sides; "
                     f"lr {s.reward_lr}, weight decay 0.01.")
    if "grpo-ours" in results:
        lines.append(
            f"GRPO: {s.prompts} prompts x {s.group_size} samples = {s.rollout_size} responses of exactly "
            f"{s.max_new_tokens} new tokens (eos suppressed with min_new_tokens on both sides), then "
            f"{s.update_epochs} epoch(s) of {s.minibatch_size}-sequence minibatches (TRL: steps_per_generation="
            f"{s.rollout_size // s.minibatch_size}, num_iterations={s.update_epochs}); loss 'grpo', beta {s.kl_beta}, "
            f"clip {s.clip_eps}, lr {s.policy_lr}, temperature {s.temperature}. Reward on BOTH sides: the same "
            "length function (characters / 100), no reward-model forward.")
    if "sft-ours" in results:
        lines.append(f"SFT: {s.batch_size} synthetic demonstrations per step (each on its own chat prompt, answered "
                     f"by a synthetic chosen response), the same token ids (our encoding, max length {s.max_length}) "
                     f"in the same batches and order on both sides; loss on the answer tokens only (TRL: "
                     f"completion_only_loss), lr {s.reward_lr}, no weight decay; ours projects only answer tokens "
                     "through the LM head.")
    if "ppo-shared" in results:
        method = ("torch.cuda.max_memory_allocated (weights included)" if s.device == "cuda" else
                  "peak RSS (ru_maxrss) minus the RSS right after the imports, before any model loads; "
                  + ("freed memory returned to the OS at once in both variants (model.release_cpu_memory: glibc "
                     "mmap threshold 128 KiB), so the figures compare the models, not glibc's caching"
                     if s.release_cpu_memory else "glibc malloc defaults in both variants"))
        lines.append(
            f"PPO memory: one step (rollout + {s.update_epochs} epoch(s) of {s.minibatch_size}-sequence updates), "
            f"{s.rollout_size} prompts x 1 sample, {s.max_new_tokens} forced new tokens, reward from the reward "
            "model; ours = one base + policy/value/reward adapters; separate = policy (+LoRA), reference, reward "
            f"model (+head), critic (+LoRA +head): four loads of the base; each in a fresh process; {method}.")
    for task in ("reward-ours", "reward-trl", "grpo-ours", "grpo-trl", "sft-ours", "sft-trl"):
        if task in results:
            r = results[task]
            line = (f"  {task}: timed s/step {', '.join(f'{x:.2f}' for x in r['seconds'])} "
                    f"(CPU {', '.join(f'{x:.2f}' for x in r['cpu_seconds'])})")
            if "response_tokens" in r.get("notes", {}):
                line += (f"; mean response tokens {r['notes']['response_tokens']:.1f}; "
                         f"{r['notes']['optimizer_steps_per_grpo_step']} optimizer steps per GRPO step")
            lines.append(line)
    for task in ("ppo-shared", "ppo-separate"):
        if task in results:
            r = results[task]
            lines.append(f"  {task}: peak {', '.join(f'{x:.0f}' for x in r['peak_mb_runs'])} MiB; "
                         f"{r['notes']['after_load_mb']:.0f} MiB once the models are loaded "
                         f"(peak while loading {r['notes']['peak_by_end_of_load_mb']:.0f}); "
                         f"mean response tokens {r['notes']['response_tokens']:.1f}")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="default", help="default (SmolLM2-135M-Instruct), tiny, or a local HF model dir")
    p.add_argument("--model-cache", default=os.environ.get("RLHF_MODEL_CACHE", "~/.cache/rlhf-loop/models"),
                   help="where 'default' is converted to (default: $RLHF_MODEL_CACHE or ~/.cache/rlhf-loop/models)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--quantize-4bit", action=argparse.BooleanOptionalAction, default=None,
                   help="load the base in 4-bit NF4 (default: on CUDA only)")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps before the timed ones, per run")
    p.add_argument("--steps", type=int, default=3, help="timed steps per run; the median is reported")
    p.add_argument("--repeats", type=int, default=1,
                   help="runs of each timing / memory measurement, alternating ours-first and theirs-first")
    p.add_argument("--batch-size", type=int, default=8, help="preference pairs per reward-model step")
    p.add_argument("--prompts", type=int, default=2, help="prompts per GRPO step (the PPO step: prompts x group-size)")
    p.add_argument("--group-size", type=int, default=4, help="GRPO samples per prompt")
    p.add_argument("--max-new-tokens", type=int, default=32, help="response length, forced on both sides")
    p.add_argument("--max-length", type=int, default=256, help="reward-model cap on prompt + response tokens")
    p.add_argument("--minibatch-size", type=int, default=4, help="sequences per policy-update minibatch")
    p.add_argument("--update-epochs", type=int, default=1, help="passes over each rollout")
    p.add_argument("--threads", type=int, default=0,
                   help="torch threads in every worker (default: torch's own choice); 1 is steadier on a busy machine")
    p.add_argument("--memory-allocator", choices=("release", "glibc"), default="release",
                   help="CPU PPO memory, both variants alike: 'release' returns freed memory to the OS at once "
                        "(rlhf-loop's model.release_cpu_memory), 'glibc' keeps malloc's defaults, whose cached "
                        "free memory adds to peak RSS (default: release). Timings always use glibc's defaults")
    p.add_argument("--checkpointing", choices=("defaults", "on", "off"), default="defaults",
                   help="activation checkpointing: each side's default (ours: auto, TRL: on), or on/off for both")
    p.add_argument("--autocast", choices=("auto", "fp32"), default="auto",
                   help="auto: bf16 autocast on both sides where native (both products' default); fp32: both float32")
    p.add_argument("--generation", choices=("auto", "adapter"), default="auto",
                   help="ours: model.generation (auto: merged bf16 copy where native; adapter: no copy)")
    p.add_argument("--only", choices=tuple(GROUPS), action="append", help="run only these measurements (repeatable)")
    p.add_argument("--json", type=Path, default=None, help="also write the figures here")
    p.add_argument("--verbose", action="store_true", help="show the workers' output")
    args = p.parse_args(argv)
    if args.steps < 1 or args.warmup < 0 or args.repeats < 1:
        p.error("--steps and --repeats must be >= 1 and --warmup >= 0")
    if (args.prompts * args.group_size) % args.minibatch_size:
        p.error("--minibatch-size must divide prompts x group-size (TRL splits each generation into equal steps)")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    groups = [g for g in GROUPS if g in (args.only or GROUPS)]
    started, load_before = time.perf_counter(), os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="train-step-tiny-") as tiny_dir:
        print("preparing the model and environment")
        request = {"model": args.model, "model_cache": args.model_cache, "tiny_dir": tiny_dir, "device": args.device,
                   "quantize_4bit": args.quantize_4bit}
        prep = run_worker("prepare", json.dumps(request), verbose=args.verbose)
        settings = BenchSettings(
            model_dir=prep["model_dir"], model_label=args.model, device=prep["device"],
            quantize_4bit=prep["quantize_4bit"], warmup=args.warmup, steps=args.steps, batch_size=args.batch_size,
            prompts=args.prompts, group_size=args.group_size, max_new_tokens=args.max_new_tokens,
            max_length=args.max_length, minibatch_size=args.minibatch_size, update_epochs=args.update_epochs,
            checkpointing=args.checkpointing, autocast=args.autocast, generation=args.generation, threads=args.threads,
            release_cpu_memory=args.memory_allocator == "release")
        print("measuring (each in a fresh process)")
        runs: dict[str, list[dict]] = {}
        for group in groups:
            for repeat in range(args.repeats):
                order = GROUPS[group] if repeat % 2 == 0 else GROUPS[group][::-1]
                for task in order:
                    runs.setdefault(task, []).append(
                        run_worker(task, settings.to_json(), verbose=args.verbose))
    results = {task: merge(task_runs) for task, task_runs in runs.items()}
    prep["env"]["load_average"] = {"before": load_before[0], "after": os.getloadavg()[0]}
    rows = table_rows(results)

    print()
    print(describe(prep["env"], settings, results, args))
    print()
    print(format_table(rows))
    print(f"\ntotal wall time {time.perf_counter() - started:.0f} s")
    if args.json:
        figures = {"environment": prep["env"], "settings": asdict(settings), "repeats": args.repeats,
                   "results": results,
                   "table": [{"name": r.name.strip(), "unit": r.unit, "ours": r.ours, "theirs": r.theirs,
                              "ratio": r.ratio, "target": r.target, "result": r.verdict} for r in rows]}
        args.json.write_text(json.dumps(figures, indent=2))
        print(f"figures written to {args.json}")


if __name__ == "__main__":
    main()
