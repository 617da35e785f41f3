"""The `[judges]` section of `rlhf.toml`: how AI judges (`rlhf judge`) are called and when a judge counts as
unsure, declared as in `sections`. Routing pairs to people and the page's hints are `[labeling]` keys; how much AI
labels count in training is `reward.ai_weight`."""

from __future__ import annotations

from dataclasses import dataclass

from rlhf_core.config.settings import setting


@dataclass
class JudgesConfig:
    """AI judges: the endpoint calls of `openai` judges (rate, timeout, retries, cap), the batch of local ones, a
    run's size, and the confidence below which a judge is unsure."""

    auto_run: bool = setting(
        True, "The worker runs every active judge by itself whenever open pairs exist that it has not judged (new "
              "samples), so routing sees them before people do. A judge whose last run failed waits for a person "
              "(`rlhf judge run`, or Run judge on the console).")
    requests_per_second: float = setting(2.0, "`openai` judges: at most this many requests a second (above 0).")
    timeout_seconds: float = setting(60.0, "`openai` judges: one request's timeout (above 0).")
    retries: int = setting(3, "`openai` judges: a failed request (down, timeout, 429, 5xx, an answer that is not A, B "
                              "or tie) is tried again this many times, waiting backoff_seconds, then twice as long "
                              "each time; then the run fails and stores nothing.")
    backoff_seconds: float = setting(1.0, "`openai` judges: the first wait before a retry (a 429's Retry-After wins "
                                          "when longer).")
    max_requests: int = setting(2000, "`openai` judges: requests one run makes at most (each pair takes two, one per "
                                      "order); `rlhf judge run --max-requests` overrides. Pairs judged in both orders "
                                      "before the cap are stored.")
    max_tokens: int = setting(400, "`openai` judges: completion tokens of one answer at most.")
    pairs_per_run: int = setting(200, "Pairs one judge run takes at most (`rlhf judge run --pairs` overrides): "
                                      "control pairs first, then open pairs, then pairs people judged.")
    batch_size: int = setting(8, "`hf` and `reward-model` judges: pairs scored together (both orders).")
    uncertain_below: float = setting(
        0.5, "A judge is unsure of a pair when its confidence (0 = a coin flip, 1 = certain; the two orders averaged) "
             "is below this: labeling.route = \"judge_uncertain\" serves those pairs to people first.")
