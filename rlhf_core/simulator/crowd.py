"""Simulated crowds: the kinds of annotator a real crowd holds (`rlhf_core.registry.CROWD_KINDS`).

A crowd spec such as "honest:3,random:1,left:1" names how many simulated annotators of each kind judge;
they are users `sim-<kind>-<i>` (sim-honest-1, sim-honest-2, ..., sim-left-1), so every figure kept per
annotator reads per kind. Each kind turns what the hidden gold preference says about a served pair (its
scores of the response shown left and right) into what the annotator clicks: "left", "right" or "tie",
which `storage.choice_from_screen` maps back to the pair's sides exactly as for a person.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from rlhf_core.registry import CROWD_KINDS, resolve

# `lazy` annotators judge a pair honestly only when the gold tells its responses clearly apart: a pair is
# "close" when its gold scores differ by less than this share of their magnitudes, |s_l − s_r| < 0.2 (|s_l| +
# |s_r|) (sentiment 0.8 vs 0.9 is close, 0.4 vs 0.9 is not; keyword counts 3 vs 4 are close, 1 vs 2 are not).
LAZY_CLOSE = 0.2


class CrowdSpecError(ValueError):
    """A crowd spec that cannot be read; the message says what is wrong and lists the kinds."""


@dataclass(frozen=True)
class GoldView:
    """The gold preference's scores of the response shown on the left and on the right (higher = better)."""

    left: float
    right: float

    @property
    def preferred(self) -> str:
        """"left", "right" or "tie": the side the gold scores higher."""
        return "left" if self.left > self.right else "right" if self.right > self.left else "tie"

    @property
    def close(self) -> bool:
        """The two scores are within LAZY_CLOSE of their magnitudes (a tie is close)."""
        return abs(self.left - self.right) < LAZY_CLOSE * (abs(self.left) + abs(self.right)) or \
            self.left == self.right


def _other(pick: str) -> str:
    return {"left": "right", "right": "left"}.get(pick, pick)


def honest_pick(view: GoldView, rng: random.Random, noise: float) -> str:
    """The gold's side, turned around with probability `noise` when it is decisive (a tie stays a tie)."""
    pick = view.preferred
    return _other(pick) if pick != "tie" and rng.random() < noise else pick


def random_pick(view: GoldView, rng: random.Random, noise: float) -> str:
    """Left, right or tie, uniformly: clicking through a quota without reading."""
    return rng.choice(("left", "right", "tie"))


def left_pick(view: GoldView, rng: random.Random, noise: float) -> str:
    """Always the side shown on the left."""
    return "left"


def adversarial_pick(view: GoldView, rng: random.Random, noise: float) -> str:
    """The opposite of an honest annotator's pick (with the same noise): disagreeing with the guidelines on purpose."""
    return _other(honest_pick(view, rng, noise))


def lazy_pick(view: GoldView, rng: random.Random, noise: float) -> str:
    """Honest on pairs the gold tells clearly apart, random on close ones (see LAZY_CLOSE)."""
    return random_pick(view, rng, noise) if view.close else honest_pick(view, rng, noise)


def crowd_pick(kind: str) -> Callable[[GoldView, random.Random, float], str]:
    """The pick function of the annotator kind `kind` (a `rlhf_core.registry.CROWD_KINDS` name)."""
    entry = CROWD_KINDS.require(kind)
    return resolve(entry.pick) if isinstance(entry.pick, str) else entry.pick


def parse_crowd(spec: str) -> list[tuple[str, int]]:
    """"honest:3,random:1,left:1" -> [("honest", 3), ("random", 1), ("left", 1)]; a kind alone counts 1.

    Raises CrowdSpecError for an unknown kind, a count that is not a positive whole number, a kind named
    twice, or an empty spec."""
    members: list[tuple[str, int]] = []
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        name, _, count = part.partition(":")
        name = name.strip().lower()
        if name not in CROWD_KINDS:
            raise CrowdSpecError(f"crowd {spec!r}: unknown annotator kind {name!r}; kinds: "
                                 f"{', '.join(CROWD_KINDS)}")
        try:
            n = int(count) if count.strip() else 1
        except ValueError:
            n = 0
        if n < 1:
            raise CrowdSpecError(f"crowd {spec!r}: the count of {name!r} must be a whole number of at least 1, "
                                 f"got {count.strip()!r}")
        if any(name == known for known, _ in members):
            raise CrowdSpecError(f"crowd {spec!r}: {name!r} is named twice; give its count once")
        members.append((name, n))
    if not members:
        raise CrowdSpecError(f"crowd {spec!r} names no annotator; write e.g. honest:3,random:1,left:1")
    return members


def crowd_members(spec: str | list[tuple[str, int]]) -> list[tuple[str, str]]:
    """(username, kind) of every simulated annotator of the crowd, in spec order: sim-<kind>-1, -2, ..."""
    members = parse_crowd(spec) if isinstance(spec, str) else spec
    return [(f"sim-{kind}-{i}", kind) for kind, n in members for i in range(1, n + 1)]


def kind_of(username: str) -> str | None:
    """The kind in a simulated annotator's name ("sim-left-2" -> "left"); None for anyone else."""
    parts = username.split("-")
    if len(parts) == 3 and parts[0] == "sim" and parts[1] in CROWD_KINDS and parts[2].isdigit():
        return parts[1]
    return None
