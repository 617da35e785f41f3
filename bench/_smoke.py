"""The benchmarks' smoke mode (`--smoke`; STYLE.md 14: benchmarks are code).

A smoke run takes the code paths of a real run and prints the same table, on a tiny model built from a
config (`rlhf_core.models.tiny`) with small sizes, in seconds to tens of seconds on 2 CPU cores. Its
figures mean nothing. tests/test_bench_smoke.py runs every benchmark this way, so a renamed option or a
stale page selector fails a test instead of a measurement a week later.

The smoke sizes replace the size options given on the command line (so `bench/gpu_check.sh --smoke` can
keep its GPU-sized commands: their options are still parsed and checked); every other option still counts.
Standard library only at import: `bench/train_step`'s orchestrator never imports torch.
"""

from __future__ import annotations

import argparse
import atexit
import os
import shutil
import tempfile
from pathlib import Path

SHARED_MODEL_ENV = "RLHF_BENCH_SMOKE_MODEL"
HELP = ("a smoke run: a tiny model built from a config and small sizes (replacing the size options given), the "
        f"same code paths and table as a real run; its figures mean nothing. ${SHARED_MODEL_ENV} names a tiny model "
        "directory to reuse instead of building one")
BANNER = "smoke run (--smoke): tiny sizes and models, the real code paths; the figures below mean nothing"

# A round on the tiny model in seconds (as tests/conftest.py's shrink_for_tiny_rounds): `--set` items placed after
# the command line's, so they win; ROUND_DEFAULTS go before them, so a command line can still change those.
ROUND_SIZES = (
    "sampling.max_new_tokens=8", "sampling.batch_size=16", "sampling.pool_refill_pairs=12", "reward.epochs=1",
    "reward.batch_size=8", "policy.steps=1", "policy.prompts_per_step=2", "policy.group_size=2",
    "policy.max_new_tokens=8", "policy.minibatch_size=4", "policy.update_epochs=1", "sft.epochs=1",
    "loop.probe_prompts=4",
)
# A dozen judgments never lift a tiny model's reward model past the policy gate, and a tiny model's first steps can
# pass the KL budget's share: without these a smoke round would skip policy steps, the code path it exists for.
ROUND_DEFAULTS = ("loop.min_reward_confidence=0", "policy.kl_budget=0")


def add_smoke_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--smoke", action="store_true", help=HELP)


def shared_tiny_model() -> str | None:
    """The tiny model directory named by $RLHF_BENCH_SMOKE_MODEL (the smoke test builds one for all
    benchmarks), or None when it is unset."""
    path = os.environ.get(SHARED_MODEL_ENV, "")
    if path and not (Path(path) / "config.json").is_file():
        raise SystemExit(f"${SHARED_MODEL_ENV}={path} is not a model directory (no config.json); "
                         "unset it or point it at one")
    return path or None


def tiny_model_dir() -> Path:
    """The shared tiny model, or one built now into a temporary directory removed at exit."""
    shared = shared_tiny_model()
    if shared:
        return Path(shared)
    from rlhf_core.models.tiny import build_tiny_model

    parent = tempfile.mkdtemp(prefix="rlhf-bench-tiny-")
    atexit.register(shutil.rmtree, parent, ignore_errors=True)
    return build_tiny_model(Path(parent))


def round_settings(given: list[str]) -> list[str]:
    """A benchmark's `--set` items for a smoke round: ROUND_DEFAULTS, then the command line's, then ROUND_SIZES."""
    return [*ROUND_DEFAULTS, *given, *ROUND_SIZES]


def apply_smoke(args: argparse.Namespace, *, tiny_model: str | None = None, **sizes: object) -> None:
    """With `--smoke`: each of `sizes` (an argument's dest = its smoke value) replaces the parsed value, the
    argument `tiny_model` (a dest, e.g. "model") becomes the tiny model's directory, and the banner is printed.
    Without `--smoke`, nothing changes."""
    if not args.smoke:
        return
    print(BANNER, flush=True)
    for dest, value in sizes.items():
        if not hasattr(args, dest):
            raise AttributeError(f"apply_smoke: the parser has no argument {dest!r}")
        setattr(args, dest, value)
    if tiny_model:
        setattr(args, tiny_model, str(tiny_model_dir()))
