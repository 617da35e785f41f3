"""The annotator's side of the app, free of Gradio: serve a pair, judge it, skip it, progress.

Each event is one storage call and so one database transaction (`storage.labeling.serving`): the
verdict is matched against the serve the page showed (an opaque token, `"<pair id>:<lease time>"`),
recorded, and the next pair is leased, all at once. Which sample was on the left comes from the
server's lease, never from the client.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import Any, Protocol

from labeling_app.services import AppServices
from rlhf_core.workspace import Workspace
from storage import (
    AnnotatorProgress,
    AnnotatorScreen,
    Database,
    annotator_progress,
    annotator_screen,
    judge_hint,
    parse_serve_token,
    skip_shown,
    submit_verdict,
    undo_judgment,
)

log = logging.getLogger(__name__)

# What the annotator clicked, in screen terms; mapped to the pair's own a/b through the lease.
VERDICTS = {"left": "A better", "right": "B better", "tie": "Tie", "both_bad": "Both bad"}

# The page's sentence for each storage outcome; fixed words and a pair number only.
NOTICES = {
    "saved": "Saved: {verdict} on pair #{pair}.",
    "already_saved": "Pair #{pair} was already saved.",
    "skipped": "Skipped pair #{pair}.",
    "no_token": "No pair was shown; here is your current one.",
    "not_yours": "Pair #{pair} is not assigned to you; here is your current pair.",
    "shown_again": "Pair #{pair} was shown again (in another tab?); please judge it again.",
    "slot_taken": "Not saved: your time on pair #{pair} ran out and it went to someone else. Here is your next pair.",
    "undone": "Took back your verdict on pair #{pair}; judge it again.",
    "undo_too_late": "Too late to undo: a verdict is final after its undo time or your next verdict.",
}

parse_token = parse_serve_token
_OUR_NOTICES = [re.compile(re.escape(n).replace(re.escape("{verdict}"), "(?:" + "|".join(VERDICTS.values()) + ")")
                           .replace(re.escape("{pair}"), r"\d+")) for n in NOTICES.values()]


def own_notice(text: str | None) -> str:
    """`text` if it is one of the sentences this page writes (sent back by the page), else ""."""
    return text if text and any(p.fullmatch(text) for p in _OUR_NOTICES) else ""


class HasId(Protocol):
    id: int


@dataclass(frozen=True)
class PairView:
    """A served pair as the page shows it."""

    pair_id: int
    token: str
    turns: list[tuple[str, str]]  # (role, content) in conversation order
    left_text: str
    right_text: str
    # Token counts of responses sampling cut at max_new_tokens (None: the response ended, or unknown).
    left_cut_tokens: int | None = None
    right_cut_tokens: int | None = None
    hint: str = ""  # an AI judge's choice, in screen terms (labeling.show_suggestions); "" when none is shown


@dataclass(frozen=True)
class Screen:
    """Everything the annotator page shows after an event."""

    pair: PairView | None
    progress: AnnotatorProgress
    notice: str = ""
    # With no pair to show: the background sampler's progress (`ready`, `wanted`, `loading`), if it runs.
    sampling: Any = None
    # The judgment this event saved, while it may be taken back ("Undo"); None otherwise.
    undo_id: int | None = None


def start_of_today() -> datetime:
    """Midnight in the server's local time zone, as UTC."""
    return datetime.now().astimezone().replace(hour=0, minute=0, second=0, microsecond=0).astimezone(timezone.utc)


class Annotation:
    """Serve, judge and skip pairs for one logged-in annotator at a time (stateless between calls).
    `user` is anything with the annotator's `id`; storage checks the account is active each time."""

    def __init__(self, ws: Workspace, db: Database, services: AppServices) -> None:
        self.ws, self.db, self.services = ws, db, services

    @property
    def _lease_seconds(self) -> int:
        return self.ws.config.labeling.lease_seconds

    @property
    def _control_rate(self) -> float:
        return self.ws.config.labeling.control_rate

    @property
    def undo_seconds(self) -> float:
        return self.ws.config.labeling.undo_seconds

    def current_pair(self, user: HasId) -> PairView | None:
        """The pair leased to `user` (the same one again on reload), or None when nothing is left."""
        return self.screen(user).pair

    def progress(self, user: HasId) -> AnnotatorProgress:
        return annotator_progress(self.db, user.id, since=start_of_today())

    def screen(self, user: HasId, notice: str = "") -> Screen:
        shown = annotator_screen(self.db, user.id, lease_seconds=self._lease_seconds, since=start_of_today(),
                                 control_rate=self._control_rate)
        return self._sampling(self._hinted(shown, self._view(shown, notice)))

    def judge(self, user: HasId, token: str | None, verdict: str, strength: str | None = None,
              reason: str | None = None) -> Screen:
        """Record `verdict` ("left", "right", "tie", "both_bad") for the pair behind `token`, then show
        the next pair. Raises `JudgmentError` for input no page would send (bad verdict or strength)."""
        shown = submit_verdict(self.db, user.id, token=token, pick=verdict, strength=strength or None,
                               rationale=reason, lease_seconds=self._lease_seconds, since=start_of_today(),
                               control_rate=self._control_rate, hints=self.ws.config.labeling.show_suggestions)
        if shown.created:
            self._top_up_if_low(shown.progress.pairs_open)
        screen = self._hinted(shown, self._view(shown, verdict=VERDICTS.get(verdict, verdict)))
        if self.undo_seconds > 0 and shown.outcome in ("saved", "already_saved"):
            screen = replace(screen, undo_id=shown.judgment_id)
        return self._sampling(screen)

    def undo(self, user: HasId, undo_id: str | int | None, address: str = "") -> Screen:
        """Take back the judgment `undo_id` (what the page got with "Saved") and show its pair again,
        or say it is too late (window over, a later verdict, or undone already)."""
        text = str(undo_id or "").strip()
        seconds = self.undo_seconds
        shown = undo_judgment(self.db, user.id, judgment_id=int(text) if text.isdigit() and seconds > 0 else None,
                              undo_seconds=seconds, lease_seconds=self._lease_seconds, since=start_of_today(),
                              address=address, control_rate=self._control_rate)
        return self._sampling(self._hinted(shown, self._view(shown)))

    def skip(self, user: HasId, token: str | None) -> Screen:
        shown = skip_shown(self.db, user.id, token=token, lease_seconds=self._lease_seconds,
                           since=start_of_today(), control_rate=self._control_rate)
        return self._sampling(self._hinted(shown, self._view(shown)))

    def _hinted(self, shown: AnnotatorScreen, screen: Screen) -> Screen:
        """With labeling.show_suggestions, the newest AI judge's choice on the shown pair as a hint (its judgments
        are then marked made under a hint, and left out of the judges' agreement figures)."""
        if not self.ws.config.labeling.show_suggestions or shown.pair is None or screen.pair is None:
            return screen
        hint = judge_hint(self.db, shown.pair.pair_id)
        if hint is None:
            return screen
        side = {"tie": "Tie", "both_bad": "Both bad"}.get(hint.choice) or (
            "A better" if hint.choice == shown.pair.left_side else "B better")
        sure = "" if hint.confidence is None else f" ({hint.confidence:.0%} sure)"
        return replace(screen, pair=replace(screen.pair, hint=f"AI judge {hint.judge} suggests: {side}{sure}"))

    def _sampling(self, screen: Screen) -> Screen:
        """With no pair to show, add what the background sampler is doing (the "preparing" screen)."""
        progress = self.services.sampling_progress
        if screen.pair is not None or progress is None:
            return screen
        return replace(screen, sampling=progress())

    @staticmethod
    def _view(shown: AnnotatorScreen, notice: str = "", verdict: str = "") -> Screen:
        if shown.outcome:
            notice = NOTICES[shown.outcome].format(verdict=verdict, pair=shown.outcome_pair)
        pair = shown.pair
        view = None if pair is None else PairView(
            pair_id=pair.pair_id, token=shown.token, left_text=pair.left_text, right_text=pair.right_text,
            left_cut_tokens=pair.left_cut_tokens, right_cut_tokens=pair.right_cut_tokens,
            turns=[(m.get("role", ""), m.get("content", "")) for m in pair.prompt_messages])
        return Screen(pair=view, progress=shown.progress, notice=notice)

    def _top_up_if_low(self, pairs_open: int) -> None:
        topper = self.services.pool_topper
        if topper is None or pairs_open >= self.ws.config.sampling.pool_min_open_pairs:
            return
        try:
            topper.request_top_up()
        except Exception:  # noqa: BLE001 - a sampler problem must not lose the annotator's judgment
            log.exception("pool top-up request failed")
