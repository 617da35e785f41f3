"""Generation speed: our sampler against plain Hugging Face `generate` and against the sampler as it was.

Every variant samples one response to each of the same N chat prompts (default 32, from the built-in
prompt set) with at most M new tokens (default 64), temperature 0.9, top-p 0.95, in one process after
a warm-up, and reports response tokens per second (tokens up to and including the end of turn). Two
workloads: "natural" (a response ends at its end-of-turn token, as in the product) and "forced"
(end-of-turn suppressed, every response exactly M tokens: pure decoding speed).

Variants:
- hf-base: plain `transformers` `generate` on the bare base model in the device's default dtype (float32 on
  CPU, bfloat16 on CUDA; the reference);
- before-v0 / before-trained: the sampler before this change (HF `generate` through the PEFT model,
  adapters disabled or the policy adapter applied unmerged, float32, batches of 8 = the old
  `sampling.batch_size`); reproduced here because the product no longer contains it;
- ours-v0 / ours-trained: `ModelStack.sample` with the workspace defaults (`model.generation = "auto"`,
  `sampling.batch_size` of the CPU or GPU profile);
- ours-v0-sdpa-any / ours-trained-sdpa-any (CUDA only): the same, with torch's own choice of
  attention kernel while decoding instead of `generation.DECODING_SDPA_BACKENDS`;
- with --all (or named in --variants): hf-base-bf16, ours-adapter (our decoding loop through the
  unmerged adapter, float32), ours-merged-fp32 (float32 merged copy), and hf-static-compile (static KV
  cache + torch.compile).

"trained" adapters carry random LoRA weights (std 0.02 on B): decoding cost does not depend on values.

    python bench/generation.py [--prompts 32] [--max-new-tokens 64] [--all] [--json F] [--profile F]
    python bench/generation.py --smoke              # seconds: the tiny model, 4 prompts, 4 tokens, one repeat

`--profile F` also runs each measured variant once more under `torch.profiler` and writes into the
text file F, per workload and variant: host calls per decoded token (kernel launches, host-device
synchronizations and copies on CUDA) and the operators that take the most self time, on the host and,
on CUDA, on the device. It is how to see why one decoding loop is slower than another on a GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _smoke import add_smoke_option, apply_smoke  # noqa: E402  (bench/_smoke.py)

from rlhf_core.config import Config, profile_config  # noqa: E402
from rlhf_core.data.prompt_files import read_prompt_file  # noqa: E402
from rlhf_core.models import generation  # noqa: E402
from rlhf_core.models.batching import left_pad, prompt_token_ids  # noqa: E402
from rlhf_core.models.generation import SamplingParams, native_bf16, resolve_mode  # noqa: E402
from rlhf_core.models.loading import load_causal_lm, load_tokenizer, pick_device, resolve_model_dir  # noqa: E402
from rlhf_core.models.stack import ModelStack  # noqa: E402

TEMPERATURE, TOP_P = 0.9, 0.95
BEFORE_BATCH = 8  # sampling.batch_size before this change


def cut_at_eos(rows: list[list[int]], eos: int) -> list[list[int]]:
    return [row[: row.index(eos) + 1] if eos in row else row for row in rows]


def hf_generate(model, tok, prompts: list[list[int]], max_new: int, forced: bool, batch: int,
                **extra) -> list[list[int]]:
    out: list[list[int]] = []
    for start in range(0, len(prompts), batch):
        ids, mask = left_pad(prompts[start:start + batch], tok.pad_token_id)
        ids, mask = ids.to(model.device), mask.to(model.device)
        with torch.no_grad():
            gen = model.generate(input_ids=ids, attention_mask=mask, do_sample=True, temperature=TEMPERATURE,
                                 top_p=TOP_P, top_k=0, max_new_tokens=max_new,
                                 min_new_tokens=max_new if forced else 0, pad_token_id=tok.pad_token_id,
                                 eos_token_id=tok.eos_token_id, **extra)
        out += cut_at_eos(gen[:, ids.shape[1]:].tolist(), tok.eos_token_id)
    return out


def randomize_policy(stack: ModelStack) -> None:
    torch.manual_seed(0)
    with torch.no_grad():
        for name, p in stack.model.named_parameters():
            if ".policy." in name and "lora_B" in name:
                p.normal_(0, 0.02)


def timed(fn, repeats: int) -> tuple[float, int]:
    """(median seconds, response tokens of the last run) of `fn()` after one warm-up call."""
    fn()
    seconds, tokens = [], 0
    for _ in range(repeats):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        rows = fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        seconds.append(time.perf_counter() - t0)
        tokens = sum(len(r) for r in rows)
    return statistics.median(seconds), tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="default", help="'default' or a local model directory")
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--all", action="store_true", help="also the intermediate variants (slower)")
    parser.add_argument("--workloads", default="natural,forced")
    parser.add_argument("--variants", default="", help="comma list: only these variants (default: all)")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--profile", type=Path,
                        help="also write a profiler summary of each variant into this text file")
    add_smoke_option(parser)
    args = parser.parse_args()
    apply_smoke(args, tiny_model="model", prompts=4, max_new_tokens=4, repeats=1)

    load_before = os.getloadavg()[0]
    device = pick_device("auto")
    cache = Path(os.environ.get("RLHF_MODEL_CACHE", Path.home() / ".cache" / "rlhf-loop" / "models"))
    model_dir = resolve_model_dir(args.model, cache)
    tok = load_tokenizer(model_dir)
    data = Path(__file__).resolve().parent.parent / "rlhf_core" / "data" / "demo_prompts.jsonl"
    profile = profile_config("gpu" if device.type == "cuda" else "cpu")
    conversations = (read_prompt_file(data, max_prompt_chars=profile.labeling.max_prompt_chars) * 8)[: args.prompts]
    prompts = [prompt_token_ids(tok, c) for c in conversations]
    batch = profile.sampling.batch_size
    mode, gen_dtype = resolve_mode(profile.model.generation, device)
    quantized = device.type == "cuda"  # the product's quantize_4bit = "auto"

    plain = load_causal_lm(model_dir, quantize_4bit=False, device=device)
    before = ModelStack.load(model_dir, device=device, quantize_4bit=quantized, generation="adapter")
    ours = ModelStack.load(model_dir, device=device, quantize_4bit=quantized, generation=profile.model.generation,
                           precision=profile.model.precision)
    for stack in (before, ours):
        randomize_policy(stack)

    def before_sampler(adapter: str | None, max_new: int, forced: bool):
        def run() -> list[list[int]]:
            before.model.eval()
            if adapter is None:
                with before.model.disable_adapter():
                    return hf_generate(before.model, tok, prompts, max_new, forced, BEFORE_BATCH)
            with before.use(adapter):
                return hf_generate(before.model, tok, prompts, max_new, forced, BEFORE_BATCH)
        return run

    def ours_sampler(stack: ModelStack, adapter: str | None, max_new: int, forced: bool):
        params = SamplingParams(max_new_tokens=max_new, temperature=TEMPERATURE, top_p=TOP_P,
                                min_new_tokens=max_new if forced else 0)
        return lambda: stack.sample(prompts, params, adapter=adapter, batch_size=batch)

    def any_attention(make):
        """A sampler run with torch's own attention-kernel choice while decoding."""
        def run() -> list[list[int]]:
            chosen, generation.DECODING_SDPA_BACKENDS = generation.DECODING_SDPA_BACKENDS, None
            try:
                return make()
            finally:
                generation.DECODING_SDPA_BACKENDS = chosen
        return run

    variants: dict[str, object] = {
        "hf-base": lambda m, f: (lambda: hf_generate(plain, tok, prompts, m, f, len(prompts))),
        "before-v0": lambda m, f: before_sampler(None, m, f),
        "before-trained": lambda m, f: before_sampler("policy", m, f),
        "ours-v0": lambda m, f: ours_sampler(ours, None, m, f),
        "ours-trained": lambda m, f: ours_sampler(ours, "policy", m, f),
    }
    if device.type == "cuda":
        variants.update({
            "ours-v0-sdpa-any": lambda m, f: any_attention(ours_sampler(ours, None, m, f)),
            "ours-trained-sdpa-any": lambda m, f: any_attention(ours_sampler(ours, "policy", m, f)),
        })
    wanted = set(args.variants.split(",")) if args.variants else set()
    extra = {"hf-base-bf16", "ours-adapter-fp32", "ours-merged-fp32", "hf-static-compile"}
    if args.all or wanted & extra:
        plain_bf16 = load_causal_lm(model_dir, quantize_4bit=False, device=device, dtype=torch.bfloat16)
        variants["hf-base-bf16"] = lambda m, f: (lambda: hf_generate(plain_bf16, tok, prompts, m, f, len(prompts)))
    if args.all or wanted & (extra - {"hf-base-bf16"}):
        adapter_stack = ModelStack.load(model_dir, device=device, generation="adapter")
        merged32 = ModelStack.load(model_dir, device=device, generation="merged")
        merged32.generation_dtype = torch.float32
        for stack in (adapter_stack, merged32):
            randomize_policy(stack)
        variants.update({
            "ours-adapter-fp32": lambda m, f: ours_sampler(adapter_stack, "policy", m, f),
            "ours-merged-fp32": lambda m, f: ours_sampler(merged32, "policy", m, f),
            "hf-static-compile": lambda m, f: _compiled(plain, tok, prompts, m, f),
        })

    if wanted:
        variants = {k: v for k, v in variants.items() if k in wanted}
    results: dict[str, dict[str, dict[str, float]]] = {}
    profiles: list[str] = []
    for workload in args.workloads.split(","):
        forced = workload == "forced"
        for name, make in variants.items():
            t0 = time.perf_counter()
            seconds, tokens = timed(make(args.max_new_tokens, forced), args.repeats)
            results.setdefault(workload, {})[name] = {"seconds": seconds, "tokens": tokens,
                                                      "tokens_per_s": tokens / seconds}
            print(f"  {workload:<8} {name:<18} {tokens / seconds:8.1f} tok/s  ({tokens} tokens in {seconds:.2f} s; "
                  f"variant took {time.perf_counter() - t0:.0f} s)", flush=True)
            if args.profile:
                summary = profile_summary(make(args.max_new_tokens, forced), device)
                profiles.append(f"=== {workload} / {name}\n{summary}")
                args.profile.write_text("\n".join(profiles))

    name = torch.cuda.get_device_name() if device.type == "cuda" else f"cpu ({platform.processor() or 'x86_64'})"
    env = {"device": name,
           "threads": torch.get_num_threads(), "torch": torch.__version__, "native_bf16": native_bf16(device),
           "ours": f"generation {mode} ({gen_dtype}), batch {batch}", "prompts": args.prompts,
           "decoding_attention": attention_choice(device, gen_dtype or torch.float32, ours.model.config),
           "max_new_tokens": args.max_new_tokens, "load_average": {"before": load_before, "after": os.getloadavg()[0]}}
    print(f"\nenvironment: {json.dumps(env)}")
    ratios = {}
    for workload, table in results.items():
        if not {"hf-base", "before-trained", "ours-trained"} <= set(table):
            continue
        ref, before_t = table["hf-base"]["tokens_per_s"], table["before-trained"]["tokens_per_s"]
        ours_t = table["ours-trained"]["tokens_per_s"]
        ratios[workload] = {"ours_trained_vs_hf_base": ours_t / ref,
                            "ours_trained_vs_before_trained": ours_t / before_t}
        print(f"\n{workload}: {'variant':<18} {'tok/s':>8} {'x hf-base':>10}")
        for name, row in table.items():
            print(f"{'':<{len(workload) + 2}}{name:<18} {row['tokens_per_s']:8.1f} {row['tokens_per_s'] / ref:10.2f}")
        print(f"  target ours-trained >= 1.0x hf-base: {ours_t / ref:.2f}x "
              f"({'pass' if ours_t >= ref else 'MISS'}); >= 2x before-trained: {ours_t / before_t:.2f}x "
              f"({'pass' if ours_t >= 2 * before_t else 'MISS'})")
    if args.json:
        args.json.write_text(json.dumps({"environment": env, "results": results, "ratios": ratios}, indent=2))
        print(f"figures written to {args.json}")
    if args.profile:
        print(f"profiles written to {args.profile}")


def attention_choice(device: torch.device, dtype: torch.dtype, config) -> dict[str, str]:
    """Which attention kernel torch picks for one decoding step of the default batch (a query of one
    position against 200 keys, with a padding mask), by itself and under DECODING_SDPA_BACKENDS."""
    if device.type != "cuda":
        return {}
    from torch.nn.attention import SDPBackend

    heads, kv = config.num_attention_heads, getattr(config, "num_key_value_heads", config.num_attention_heads)
    dim = config.hidden_size // heads
    q = torch.randn(64, heads, 1, dim, device=device, dtype=dtype)
    k = torch.randn(64, kv, 200, dim, device=device, dtype=dtype).repeat_interleave(heads // kv, dim=1)
    mask = torch.ones(64, 1, 1, 200, device=device, dtype=torch.bool)
    names = {int(b): name for name, b in SDPBackend.__members__.items()}
    choice = {"torch": names.get(int(torch._fused_sdp_choice(q, k, k, attn_mask=mask)), "?")}
    with generation.decoding_attention(device):
        choice["ours"] = names.get(int(torch._fused_sdp_choice(q, k, k, attn_mask=mask)), "?")
    return choice


HOST_CALLS = ("cudaLaunchKernel", "cudaLaunchKernelExC", "cudaStreamSynchronize", "cudaDeviceSynchronize",
              "cudaEventSynchronize", "cudaMemcpyAsync", "aten::item", "aten::_local_scalar_dense", "aten::nonzero")


def profile_summary(fn, device: torch.device, rows: int = 25) -> str:
    """One run of `fn` (returning token lists) under torch.profiler: host calls per decoded token and the
    operators with the most self time on the host (and on the device, on CUDA)."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    t0 = time.perf_counter()
    with profile(activities=activities) as prof:
        out = fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    tokens = max(1, sum(len(r) for r in out))
    events = prof.key_averages()
    counts = {e.key: e.count for e in events}
    lines = [f"{tokens} tokens in {seconds:.2f} s under the profiler ({len(out)} responses, longest "
             f"{max((len(r) for r in out), default=0)} tokens)", "host calls per response token:"]
    lines += [f"  {key:<28} {counts[key] / tokens:8.2f}" for key in HOST_CALLS if key in counts]
    aten = sum(e.count for e in events if e.key.startswith("aten::"))
    lines.append(f"  {'aten operators':<28} {aten / tokens:8.2f}")
    lines += ["", "by self host time:", events.table(sort_by="self_cpu_time_total", row_limit=rows)]
    if device.type == "cuda":
        lines += ["", "by self device time:", events.table(sort_by="self_cuda_time_total", row_limit=rows)]
    return "\n".join(lines) + "\n"


def _compiled(model, tok, prompts, max_new: int, forced: bool):
    """HF generate with a static KV cache and torch.compile (compiles on the warm-up call)."""
    model.generation_config.cache_implementation = "static"
    model.forward = torch.compile(model.forward, mode="reduce-overhead", dynamic=False)
    return lambda: hf_generate(model, tok, prompts, max_new, forced, len(prompts))


if __name__ == "__main__":
    Config()  # import check: the product's config loads
    main()
