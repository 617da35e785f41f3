"""The base model's reward features of judged responses, kept between reward trainings.

The policy gate's cross-fitted probe (`crossfit`) and, in a first training, the annotator model's pilot
(`crowd_weights`) read every judgment through the frozen base. Those features never change while the base and the
head's layout stay the same, and each round adds judgments to the ones read before: without a cache, round r reads
all r rounds' judgments again. The cache holds the features of each distinct (prompt, response) token sequence,
one file per layout (base model directory, 4-bit or not, precision, pooling, depths) under the workspace's cache
folder; a changed layout starts a new file. It is only a cache: a file that cannot be read is set aside and rebuilt,
and nothing but speed depends on it. Values come from packed forward passes, so a response read beside other
responses may differ from a fresh read in the last bits (bf16), as packed reads already do.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import torch

from rlhf_core.models.stack import ModelStack
from rlhf_core.training.reward_data import EncodedPair
from rlhf_core.training.reward_model import pair_features

log = logging.getLogger(__name__)

MAX_ENTRIES = 50_000  # responses kept per layout (~115 MB of float32 at 576 features): the oldest go first
Key = tuple[tuple[int, ...], tuple[int, ...]]  # (prompt tokens, response tokens)


def layout_key(stack: ModelStack) -> str:
    """What the base features depend on besides the tokens: the base model (its directory, and its weight and
    config files' sizes and times, so that weights replaced in place start a new file), how it is stored and run,
    and the reward head's layout (pooling and depths)."""
    folder = Path(stack.model_dir).resolve()
    files = sorted((f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in folder.iterdir()
                   if f.is_file() and f.suffix in {".safetensors", ".bin", ".json"})  # weights replaced in place
    layout = {"model": str(folder), "files": files, "quantized": bool(stack.quantized),
              "autocast": str(stack.autocast_dtype), "pooling": stack.reward_pooling,
              "depths": [float(d) for d in stack.reward_depths]}
    return hashlib.sha256(json.dumps(layout, sort_keys=True).encode()).hexdigest()[:16]


class BaseFeatureCache:
    """Features [F] of (prompt, response) token sequences through the frozen base, for one layout, kept in the
    file `path`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.entries: dict[Key, torch.Tensor] = {}
        self.hits = self.misses = 0
        if path.exists():
            try:
                stored = torch.load(path, weights_only=True)
                self.entries = {(tuple(p), tuple(r)): f for p, r, f in zip(stored["prompts"], stored["responses"],
                                                                          stored["features"], strict=True)}
            except Exception as exc:  # noqa: BLE001 - any unreadable cache is rebuilt
                log.warning("base feature cache %s unreadable (%s); set aside and rebuilt", path, exc)
                path.replace(path.with_suffix(".unreadable"))
                self.entries = {}

    @classmethod
    def in_folder(cls, folder: Path, stack: ModelStack) -> BaseFeatureCache:
        """The cache of `stack`'s current layout in `folder`."""
        return cls(Path(folder) / f"base-features-{layout_key(stack)}.pt")

    def pair_features(self, stack: ModelStack, pairs: Sequence[EncodedPair], batch_size: int
                      ) -> tuple[torch.Tensor, torch.Tensor]:
        """`reward_model.pair_features` of `pairs` through the stack as it is now (the caller has reset the
        reward adapter: these are the base's features), reading only the responses not cached yet."""
        def key(pair: EncodedPair, side: Sequence[int]) -> Key:
            return tuple(pair.prompt), tuple(side)

        sides = [(key(p, p.chosen), key(p, p.rejected)) for p in pairs]
        distinct = {k for both in sides for k in both}
        absent = {k for k in distinct if k not in self.entries}
        self.hits, self.misses = self.hits + len(distinct) - len(absent), self.misses + len(absent)
        missing = [(p, both) for p, both in zip(pairs, sides, strict=True) if not absent.isdisjoint(both)]
        if missing:
            chosen, rejected = pair_features(stack, [p for p, _ in missing], batch_size)
            for (_, (c_key, r_key)), c, r in zip(missing, chosen, rejected, strict=True):
                self.entries.setdefault(c_key, c.clone())
                self.entries.setdefault(r_key, r.clone())
            self.save()
        if not pairs:
            return torch.zeros(0), torch.zeros(0)
        return (torch.stack([self.entries[c_key] for c_key, _ in sides]),
                torch.stack([self.entries[r_key] for _, r_key in sides]))

    def save(self) -> None:
        """Write the entries (the newest MAX_ENTRIES) atomically; a failed write only costs speed."""
        if len(self.entries) > MAX_ENTRIES:
            self.entries = dict(list(self.entries.items())[-MAX_ENTRIES:])
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(f".tmp{os.getpid()}")
            torch.save({"prompts": [list(k[0]) for k in self.entries], "responses": [list(k[1]) for k in self.entries],
                        "features": torch.stack(list(self.entries.values())) if self.entries else torch.zeros(0)},
                       tmp)
            tmp.replace(self.path)
        except OSError as exc:
            log.warning("base feature cache not saved to %s: %s", self.path, exc)


def base_pair_features(stack: ModelStack, pairs: Sequence[EncodedPair], batch_size: int, folder: Path | None
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """`pair_features` of `pairs` through the frozen base (the caller has reset the reward adapter), through the
    cache in `folder` for the stack's layout; None: read them all, no cache."""
    if folder is None:
        return pair_features(stack, pairs, batch_size)
    return BaseFeatureCache.in_folder(folder, stack).pair_features(stack, pairs, batch_size)
