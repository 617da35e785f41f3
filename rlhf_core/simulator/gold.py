"""Gold preferences: scripted "true" rewards that stand in for human taste in simulations and benchmarks.

A gold preference scores one response to one prompt, `score(prompt_messages, response_text) -> float`,
higher = better. Two responses with equal scores are a tie. The table of golds is
`rlhf_core.registry.GOLDS`: each entry names a factory here, `factory(**options)` returns such a score
function; `get_gold` adds aliases and error messages a person can act on.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Sequence

from rlhf_core.registry import GOLDS, Gold, resolve

GoldScore = Callable[[list[dict[str, str]], str], float]

# A word the default model says unprompted now and then, so a preference for it can be learned and
# reinforced: "you" is in 17.7% of 1,200 SmolLM2-135M-Instruct answers to the built-in prompts ("please":
# 0.3%, which made the keyword gold a tie on nearly every pair).
DEFAULT_KEYWORD = "you"


class GoldPreferenceError(ValueError):
    """An unknown gold preference name or option; the message lists what is available."""


def sentiment_gold() -> GoldScore:
    """VADER compound sentiment of the response, in [-1, 1]: the more positive, the better.

    The classic "make the policy positive" task; the prompt is ignored.
    """
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    analyzer = SentimentIntensityAnalyzer()  # loads its lexicon once; reused by every call below

    def score(prompt_messages: list[dict[str, str]], response_text: str) -> float:
        return float(analyzer.polarity_scores(response_text)["compound"])

    return score


def longer_gold() -> GoldScore:
    """Response length in characters: longer is better (the length bias reward models are known for)."""

    def score(prompt_messages: list[dict[str, str]], response_text: str) -> float:
        return float(len(response_text))

    return score


def shorter_gold() -> GoldScore:
    """Minus the response length in characters: shorter is better."""

    def score(prompt_messages: list[dict[str, str]], response_text: str) -> float:
        return -float(len(response_text))

    return score


# The concise gold's default target: about two sentences. It lies below most of the default model's answers (the
# median of 48 SmolLM2-135M-Instruct answers to the built-in eval prompts, 64 new tokens, is 270 characters; a
# quarter are under 170), so on the base model's pairs "shorter" nearly always wins, and a reward model learned
# from them says "shorter is better" past the point where the gold turns: an interior optimum, as people's
# preference for length has one.
DEFAULT_CONCISE_TARGET = 150


def concise_gold(target: int = DEFAULT_CONCISE_TARGET) -> GoldScore:
    """Minus the distance of the response's length from `target` characters: an answer about that long is best,
    and one far shorter loses as one far longer does (an empty answer is `target` characters off)."""
    chars = int(target)
    if chars < 1:
        raise GoldPreferenceError(f"the concise gold preference needs a target of at least 1 character; got {target}")

    def score(prompt_messages: list[dict[str, str]], response_text: str) -> float:
        return -float(abs(len(response_text.strip()) - chars))

    return score


def keyword_gold(keyword: str = DEFAULT_KEYWORD, case_sensitive: bool = False) -> GoldScore:
    """How often `keyword` occurs in the response as a whole word (so "please" does not match "pleased")."""
    keyword = keyword.strip()
    if not keyword:
        raise GoldPreferenceError("the keyword gold preference needs a non-empty keyword")
    pattern = re.compile(rf"(?<!\w){re.escape(keyword)}(?!\w)", 0 if case_sensitive else re.IGNORECASE)

    def score(prompt_messages: list[dict[str, str]], response_text: str) -> float:
        return float(len(pattern.findall(response_text)))

    return score


def _gold_entry(name: str) -> Gold | None:
    key = name.strip().lower()
    for gold in GOLDS.values():
        if key == gold.name or key in gold.aliases:
            return gold
    return None


def available_gold() -> str:
    """The names `get_gold` accepts, for messages: "keyword, longer (alias: length), ..."."""
    names = sorted(GOLDS.values(), key=lambda g: g.name)
    return ", ".join(f"{g.name} (alias: {', '.join(g.aliases)})" if g.aliases else g.name for g in names)


def get_gold(name: str, **options: object) -> GoldScore:
    """The score function of the gold preference `name` (case-insensitive; aliases allowed), built with `options`.

    Raises GoldPreferenceError for an unknown name or an option the preference does not take.
    """
    entry = _gold_entry(name)
    if entry is None:
        raise GoldPreferenceError(f"unknown gold preference {name!r}; available: {available_gold()}")
    factory = resolve(entry.factory) if isinstance(entry.factory, str) else entry.factory
    accepted = list(inspect.signature(factory).parameters)
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        takes = ", ".join(accepted) if accepted else "no options"
        raise GoldPreferenceError(f"gold preference {entry.name!r} does not take {', '.join(unknown)}; it takes "
                                  f"{takes}")
    return factory(**options)


GoldRewrite = Callable[[list[dict[str, str]], str], str]


def keyword_rewrite(keyword: str = DEFAULT_KEYWORD, case_sensitive: bool = False) -> GoldRewrite:
    """The keyword gold's own rewrite: a response that lacks the keyword gets a closing sentence that has it."""
    score = keyword_gold(keyword, case_sensitive)

    def rewrite(prompt_messages: list[dict[str, str]], response_text: str) -> str:
        if score(prompt_messages, response_text) > 0:
            return response_text
        return f"{response_text.rstrip()} I hope this helps, {keyword.strip()}!".strip()

    return rewrite


def shorter_rewrite() -> GoldRewrite:
    """The shorter gold's own rewrite: the response's first sentence."""

    def rewrite(prompt_messages: list[dict[str, str]], response_text: str) -> str:
        first = re.split(r"(?<=[.!?])\s", response_text.strip(), maxsplit=1)[0]
        return first or response_text

    return rewrite


def get_gold_rewrite(name: str, **options: object) -> GoldRewrite | None:
    """The rewrite the gold preference `name` offers (built with the gold's `options`), or None."""
    entry = _gold_entry(name)
    if entry is None or entry.rewrite is None:
        return None
    factory = resolve(entry.rewrite) if isinstance(entry.rewrite, str) else entry.rewrite
    return factory(**options)


def gold_win_rate(scores_policy: Sequence[float], scores_base: Sequence[float]) -> float:
    """Share of prompts on which the policy's response beats the base's under the gold score, ties counting half.

    scores_policy[i] and scores_base[i] score the two responses to prompt i. Returns a value in [0, 1];
    0.5 means no better than the base.
    """
    if len(scores_policy) != len(scores_base):
        raise ValueError(f"gold_win_rate needs paired scores; got {len(scores_policy)} and {len(scores_base)}")
    if not scores_policy:
        raise ValueError("gold_win_rate needs at least one pair of scores")
    points = sum(1.0 if p > b else 0.5 if p == b else 0.0 for p, b in zip(scores_policy, scores_base))
    return points / len(scores_policy)
