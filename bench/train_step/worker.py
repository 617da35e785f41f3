"""Worker process of `python -m bench.train_step`: runs measurements and writes their results as JSON.

    python -m bench.train_step.worker TASK[,TASK...] SETTINGS_JSON OUT_PATH    (from the repository root)

One fresh process per measurement keeps them apart: no shared allocator state, threads or warm caches
between ours and theirs, and a clean peak-RSS reading for each PPO memory variant. A smoke run
(`--smoke`) gives one worker all its tasks, in the same order, to pay the imports once: its figures mean
nothing anyway. OUT_PATH receives {task: result}; the task `prepare` writes the resolved model and environment.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from bench.train_step.settings import BenchSettings  # standard library only: no torch before the memory baseline

TIMING_TASKS = ("reward-ours", "reward-trl", "grpo-ours", "grpo-trl", "sft-ours", "sft-trl")
MEMORY_TASKS = ("ppo-shared", "ppo-separate")


def prepare(options: dict) -> dict:
    """Resolve the model directory (building the tiny model if asked), the device and 4-bit, and the environment."""
    import platform
    from importlib.metadata import version

    import torch

    from rlhf_core.models.loading import pick_device, resolve_model_dir

    if options["model"] == "tiny":
        from rlhf_core.models.tiny import build_tiny_model

        model_dir = build_tiny_model(Path(options["tiny_dir"]))
    else:
        model_dir = resolve_model_dir(options["model"], Path(options["model_cache"]))
    device = pick_device(options["device"]).type
    quantize = device == "cuda" if options["quantize_4bit"] is None else options["quantize_4bit"]
    env = {"device": torch.cuda.get_device_name() if device == "cuda" else f"cpu ({cpu_name()})",
           "threads": torch.get_num_threads(), "python": platform.python_version()}
    env.update({name: version(name) for name in ("torch", "transformers", "trl", "peft")})
    if quantize:
        env["bitsandbytes"] = version("bitsandbytes")
    return {"model_dir": str(model_dir), "device": device, "quantize_4bit": quantize, "env": env}


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


def measure(task: str, settings: BenchSettings) -> dict:
    """One measurement in this process; its module is imported here, so the PPO memory baseline (the RSS after
    the imports) already includes transformers and rlhf_core."""
    if task in MEMORY_TASKS:
        from bench.train_step import memory

        return (memory.ppo_shared if task == "ppo-shared" else memory.ppo_separate)(settings)
    from bench.train_step import timing

    return getattr(timing, task.replace("-", "_"))(settings)


def main() -> None:
    tasks, payload, out_path = sys.argv[1].split(","), sys.argv[2], Path(sys.argv[3])
    if tasks == ["prepare"]:
        out_path.write_text(json.dumps(prepare(json.loads(payload))))
        return
    unknown = [task for task in tasks if task not in MEMORY_TASKS + TIMING_TASKS]
    if unknown:
        raise SystemExit(f"unknown task(s) {', '.join(unknown)}; expected {', '.join(MEMORY_TASKS + TIMING_TASKS)}")
    import torch

    settings = BenchSettings.from_json(payload)
    if settings.threads:
        torch.set_num_threads(settings.threads)
    if set(tasks) & set(MEMORY_TASKS) and settings.device == "cpu" and settings.release_cpu_memory:
        # rlhf-loop's `model.release_cpu_memory`, in both variants alike: peak RSS then follows the
        # memory in use rather than what glibc keeps cached after frees.
        from rlhf_core.models.loading import return_freed_tensor_memory

        return_freed_tensor_memory()
    out_path.write_text(json.dumps({task: measure(task, settings) for task in tasks}))


if __name__ == "__main__":
    main()
