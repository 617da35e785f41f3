"""What the training-step benchmark prints: the ours/theirs table with its targets, and the environment
and method in the words a reader of the table needs. Standard library only (the orchestrator never
imports torch)."""

from __future__ import annotations

from dataclasses import dataclass

from bench.train_step.settings import BenchSettings

TIME_TARGET = 0.8
MEMORY_TARGET = 0.4


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


def describe(env: dict, s: BenchSettings, results: dict, repeats: int, *, smoke: bool = False) -> str:
    """The environment and the method, in the words a reader of the table needs (`smoke`: every measurement ran
    in one process)."""
    processes = "all in one process (a smoke run)" if smoke else "each in a fresh process"
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
            f"timing: median over {repeats} run(s) x {s.steps} timed steps, after {s.warmup} warm-up step(s) "
            f"per run; {processes}; loading and trainer setup are not timed. TRL: a TrainerCallback "
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
            f"model (+head), critic (+LoRA +head): four loads of the base; {processes}; {method}.")
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
