"""What the app may call beyond the database: the pool topper and the operator's sampler.

Both are optional so the page runs without a model; the lead wires real ones in `rlhf serve`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol


class PoolTopper(Protocol):
    def request_top_up(self) -> None:
        """Ask for more pairs; must return at once (sampling runs in the background)."""


@dataclass
class AppServices:
    """Services handlers call. `None` means "not available on this server" and the app says so."""

    pool_topper: PoolTopper | None = None
    # Operator's "sample N more pairs": returns something printable (a job id, a message) or None.
    request_pairs: Callable[[int], Any] | None = None
    # The background sampler's state for the "preparing the first pairs" screen: a `SamplingProgress`
    # (rlhf_core.loop.sampling) while a top-up runs, else None. Must be cheap (no database, no model).
    sampling_progress: Callable[[], Any] | None = None
    # The operator's "Try it": (prompt, [version ids], greedy, max new tokens) -> one response per version
    # (`TriedResponse`s of rlhf_core.service.playground), generated in this process; may take seconds.
    try_versions: Callable[[str, list[int], bool, int], list[Any]] | None = None
    # The operator's best-of-N: (prompt, version id or None, N, scorer name) -> a `BestOfN`
    # (rlhf_core.service.best_of_n), generated and scored in this process; may take seconds.
    best_of_n: Callable[[str, int | None, int, str], Any] | None = None
