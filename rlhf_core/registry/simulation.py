"""The simulator's kinds: gold preferences (the hidden "true" taste of simulated annotators and
benchmarks) and the kinds of annotator a simulated crowd holds. `rlhf simulate`, `rlhf demo`, the
benchmarks and the docs read these tables; the code is in `rlhf_core.simulator`.

A gold's `factory(**options) -> score(prompt_messages, response_text) -> float` (higher is better; equal
scores are a tie); its optional `rewrite(**options) -> rewrite(prompt_messages, response_text) -> str`
improves a response (stage 1's simulated demonstrator). A crowd kind's `pick(view, rng, noise)` turns
the gold's view of a served pair into "left", "right" or "tie". A step gold's `label(prompt_messages,
steps) -> list[str]` says what each step of a response truly is ("good", "neutral" or "bad"): the simulated step
labels of tests and benchmarks. References may be "module:function" strings or the callables themselves (a gold
registered from outside the package).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rlhf_core.registry.base import Registry


@dataclass(frozen=True)
class Gold:
    name: str
    help: str
    factory: str | Callable[..., Any]
    rewrite: str | Callable[..., Any] | None = None
    aliases: tuple[str, ...] = ()


GOLDS: Registry[Gold] = Registry("gold preference", [
    Gold("sentiment", "VADER compound sentiment of the response: the more positive, the better",
         "rlhf_core.simulator.gold:sentiment_gold"),
    Gold("longer", "response length in characters: longer is better", "rlhf_core.simulator.gold:longer_gold",
         aliases=("length",)),
    Gold("shorter", "minus the response length: shorter is better", "rlhf_core.simulator.gold:shorter_gold",
         rewrite="rlhf_core.simulator.gold:shorter_rewrite"),
    Gold("concise", "length near a target (option `target`, default 150 characters): closer is better, too short "
         "loses as too long does", "rlhf_core.simulator.gold:concise_gold"),
    Gold("keyword", "how often a keyword (option `keyword`, default \"you\") occurs as a whole word",
         "rlhf_core.simulator.gold:keyword_gold", rewrite="rlhf_core.simulator.gold:keyword_rewrite"),
])


@dataclass(frozen=True)
class CrowdKind:
    name: str
    help: str
    pick: str | Callable[..., str]


CROWD_KINDS: Registry[CrowdKind] = Registry("annotator kind", [
    CrowdKind("honest", "follows the gold preference; a decisive label flipped with probability --noise",
              "rlhf_core.simulator.crowd:honest_pick"),
    CrowdKind("random", "left, right or tie uniformly at random", "rlhf_core.simulator.crowd:random_pick"),
    CrowdKind("left", "always the side shown on the left", "rlhf_core.simulator.crowd:left_pick"),
    CrowdKind("adversarial", "the opposite of the gold preference (with --noise)",
              "rlhf_core.simulator.crowd:adversarial_pick"),
    CrowdKind("lazy", "honest where the gold scores differ by at least 20% of their size, random on closer pairs",
              "rlhf_core.simulator.crowd:lazy_pick"),
])


@dataclass(frozen=True)
class StepGold:
    name: str
    help: str
    label: str | Callable[..., list[str]]


STEP_GOLDS: Registry[StepGold] = Registry("step gold", [
    StepGold("arithmetic", "a step is good when every `a op b = c` in it is right, bad when one is wrong, neutral "
                           "when it holds none", "rlhf_core.simulator.steps:arithmetic_step_labels"),
])
