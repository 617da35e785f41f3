"""Training-step cost, ours against TRL (installed as the benchmark-only extra `rlhf-loop[bench]`).

    python -m bench.train_step                         # SmolLM2-135M-Instruct, CPU or CUDA (from the repository root)
    python -m bench.train_step --model tiny            # the tiny test model: a fast sanity run
    python -m bench.train_step --only grpo --steps 5 --repeats 2 --json out.json
    python -m bench.train_step --smoke                 # seconds: every measurement on tiny sizes, in one worker

On the same model, data and hyper-parameters it measures
  1. seconds per reward-model step: `train_reward_model` vs TRL's RewardTrainer (Bradley-Terry, LoRA);
  2. seconds per GRPO step (rollout generation + scoring + update): `train_policy(algo="grpo")` vs
     TRL's GRPOTrainer, both scored by the same length function (no reward-model forward on either side);
  3. peak memory of one PPO step (rollout + update): our one base with the policy/value/reward
     adapters vs four separate models (policy, reference, reward model, critic);
  4. seconds per SFT step on demonstrations: `train_sft` vs TRL's SFTTrainer (completion-only loss, LoRA).
Every measurement runs in its own fresh worker process (`worker.py`; a smoke run gives one worker all of
them); with --repeats the ours/theirs order alternates between rounds. Prints ours/theirs ratios (`report.py`).
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
from dataclasses import asdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if __package__ in (None, ""):  # `python bench/train_step`: make the repository importable, as `-m` from it does
    sys.path.insert(0, str(ROOT))

from bench._smoke import add_smoke_option, apply_smoke, shared_tiny_model  # noqa: E402
from bench.train_step.report import describe, format_table, median, table_rows  # noqa: E402
from bench.train_step.settings import BenchSettings  # noqa: E402

# This process never imports torch (a smoke run's excepted, whose figures mean nothing): it stays small, so a
# worker's peak RSS (which can inherit the parent's high-water mark across fork/exec) measures the worker alone.
WORKER = "bench.train_step.worker"
GROUPS = {"reward": ("reward-ours", "reward-trl"), "grpo": ("grpo-ours", "grpo-trl"),
          "ppo-memory": ("ppo-shared", "ppo-separate"), "sft": ("sft-ours", "sft-trl")}


def run_worker(tasks: list[str], payload: str, *, verbose: bool) -> dict:
    """Run `tasks` in one fresh process; its output is shown only on failure (or with --verbose)."""
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "TRANSFORMERS_VERBOSITY": "error",
           "PYTHONWARNINGS": "ignore", "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    started = time.perf_counter()
    label = tasks[0] if len(tasks) == 1 else f"{len(tasks)} tasks in one process"
    print(f"  {label:<13} ...", end="", flush=True)
    with tempfile.TemporaryDirectory(prefix="train-step-") as tmp:
        out = Path(tmp) / "result.json"
        quiet = {} if verbose else {"stdout": subprocess.PIPE, "stderr": subprocess.STDOUT}
        proc = subprocess.run([sys.executable, "-m", WORKER, ",".join(tasks), payload, str(out)], cwd=ROOT, env=env,
                              text=True, **quiet)
        if proc.returncode != 0:
            print(" failed")
            if proc.stdout:
                print(proc.stdout[-6000:], file=sys.stderr)
            raise SystemExit(f"worker {label} exited with status {proc.returncode}")
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


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.train_step", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
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
    add_smoke_option(p)
    args = p.parse_args(argv)
    if args.smoke:
        apply_smoke(args, model=shared_tiny_model() or "tiny", warmup=0, steps=1, repeats=1, batch_size=2, prompts=2,
                    group_size=2, max_new_tokens=4, max_length=64, minibatch_size=2, update_epochs=1, threads=1)
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
        if args.smoke:  # in this process: a smoke run pays the imports of one process fewer (no memory figure counts)
            from bench.train_step.worker import prepare

            prep = prepare(request)
        else:
            prep = run_worker(["prepare"], json.dumps(request), verbose=args.verbose)
        settings = BenchSettings(
            model_dir=prep["model_dir"], model_label=args.model, device=prep["device"],
            quantize_4bit=prep["quantize_4bit"], warmup=args.warmup, steps=args.steps, batch_size=args.batch_size,
            prompts=args.prompts, group_size=args.group_size, max_new_tokens=args.max_new_tokens,
            max_length=args.max_length, minibatch_size=args.minibatch_size, update_epochs=args.update_epochs,
            checkpointing=args.checkpointing, autocast=args.autocast, generation=args.generation, threads=args.threads,
            release_cpu_memory=args.memory_allocator == "release")
        runs: dict[str, list[dict]] = {}
        if args.smoke:  # one process pays the imports once; a smoke run's figures mean nothing anyway
            print("measuring (a smoke run: every task in one process)")
            tasks = [task for group in groups for task in GROUPS[group]]
            for task, result in run_worker(tasks, settings.to_json(), verbose=args.verbose).items():
                runs[task] = [result]
        else:
            print("measuring (each in a fresh process)")
            for group in groups:
                for repeat in range(args.repeats):
                    order = GROUPS[group] if repeat % 2 == 0 else GROUPS[group][::-1]
                    for task in order:
                        runs.setdefault(task, []).append(
                            run_worker([task], settings.to_json(), verbose=args.verbose)[task])
    results = {task: merge(task_runs) for task, task_runs in runs.items()}
    prep["env"]["load_average"] = {"before": load_before[0], "after": os.getloadavg()[0]}
    rows = table_rows(results)

    print()
    print(describe(prep["env"], settings, results, args.repeats, smoke=args.smoke))
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
