"""The annotator's side of the app, free of Gradio: serve a pair, judge it, skip it, progress.

The browser only ever holds an opaque serve token (`"<pair id>:<lease served_at>"`). Every judgment
is matched against the server's lease for the logged-in user; which sample was on the left comes
from that lease, never from the client.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timezone

from labeling_app.gate import DbGate
from labeling_app.services import AppServices
from rlhf_core.workspace import Workspace
from storage import (
    Annotator,
    Database,
    JudgmentError,
    choice_from_screen,
    next_pair_for,
    record_judgment,
    skip_pair,
    utcnow,
)
from storage.app_queries import AnnotatorProgress, LeaseInfo, annotator_progress, has_judged, lease_of

log = logging.getLogger(__name__)

# What the annotator clicked, in screen terms; mapped to the pair's own a/b through the lease.
VERDICTS = {"left": "A better", "right": "B better", "tie": "Tie", "both_bad": "Both bad"}


@dataclass(frozen=True)
class PairView:
    """A served pair as the page shows it."""

    pair_id: int
    token: str
    turns: list[tuple[str, str]]  # (role, content) in conversation order
    left_text: str
    right_text: str


@dataclass(frozen=True)
class Screen:
    """Everything the annotator page shows after an event."""

    pair: PairView | None
    progress: AnnotatorProgress
    notice: str = ""


def _as_utc(moment: datetime) -> datetime:
    # SQLite hands back naive datetimes; storage writes UTC.
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment.astimezone(timezone.utc)


def _stamp(moment: datetime) -> str:
    return _as_utc(moment).strftime("%Y%m%dT%H%M%S%f")


def make_token(pair_id: int, served_at: datetime) -> str:
    return f"{pair_id}:{_stamp(served_at)}"


def parse_token(token: str | None) -> tuple[int, str] | None:
    pair_id, sep, stamp = (token or "").partition(":")
    if not sep or not pair_id.isdigit() or not stamp:
        return None
    return int(pair_id), stamp


def start_of_today() -> datetime:
    """Midnight in the server's local time zone, as UTC."""
    return datetime.now().astimezone().replace(hour=0, minute=0, second=0, microsecond=0).astimezone(timezone.utc)


class Annotation:
    """Serve, judge and skip pairs for one logged-in annotator at a time (stateless between calls).
    Callers hold `gate` around each event's database work."""

    def __init__(self, ws: Workspace, db: Database, services: AppServices, gate: DbGate | None = None) -> None:
        self.ws, self.db, self.services = ws, db, services
        self.gate = gate or DbGate(db)

    def current_pair(self, user: Annotator) -> PairView | None:
        """The pair leased to `user` (the same one again on reload), or None when nothing is left."""
        for _ in range(3):  # a lease judged in another tab between the two reads: serve again
            served = next_pair_for(self.db, user.id, lease_seconds=self.ws.config.labeling.lease_seconds)
            if served is None:
                return None
            lease = lease_of(self.db, pair_id=served.pair_id, annotator_id=user.id)
            if lease is not None:
                break
        else:
            return None
        turns = [(m.get("role", ""), m.get("content", "")) for m in served.prompt_messages]
        return PairView(pair_id=served.pair_id, token=make_token(served.pair_id, lease.served_at), turns=turns,
                        left_text=served.left_text, right_text=served.right_text)

    def progress(self, user: Annotator) -> AnnotatorProgress:
        return annotator_progress(self.db, user.id, since=start_of_today())

    def screen(self, user: Annotator, notice: str = "") -> Screen:
        return Screen(pair=self.current_pair(user), progress=self.progress(user), notice=notice)

    def judge(self, user: Annotator, token: str | None, verdict: str, strength: str | None = None,
              reason: str | None = None) -> Screen:
        """Record `verdict` ("left", "right", "tie", "both_bad") for the pair behind `token`, then show
        the next pair. Raises `JudgmentError` for input no page would send (bad verdict or strength)."""
        if verdict not in VERDICTS:
            raise JudgmentError(f"verdict must be one of {', '.join(VERDICTS)}, not {verdict!r}")
        refusal, lease = self._check_token(user, token)
        if lease is None:
            return self.screen(user, refusal)
        _, created = record_judgment(
            self.db, pair_id=lease.pair_id, annotator_id=user.id,
            choice=choice_from_screen(verdict, lease.left_side),
            strength=strength or None, rationale=reason, require_served=True,
            latency_ms=int((utcnow() - _as_utc(lease.served_at)).total_seconds() * 1000),
        )
        screen = self.screen(user, f"Saved: {VERDICTS[verdict]} on pair #{lease.pair_id}.")
        if created:
            self._top_up_if_low(screen.progress.pairs_open)
        return screen

    def skip(self, user: Annotator, token: str | None) -> Screen:
        refusal, lease = self._check_token(user, token)
        if lease is None:
            return self.screen(user, refusal)
        skip_pair(self.db, pair_id=lease.pair_id, annotator_id=user.id)
        return self.screen(user, f"Skipped pair #{lease.pair_id}.")

    def _check_token(self, user: Annotator, token: str | None) -> tuple[str, LeaseInfo | None]:
        """The user's lease matching the serve the page showed, or a notice saying why not."""
        parsed = parse_token(token)
        if parsed is None:
            return "No pair was shown; here is your current one.", None
        pair_id, stamp = parsed
        lease = lease_of(self.db, pair_id=pair_id, annotator_id=user.id)
        if lease is None:
            if has_judged(self.db, pair_id=pair_id, annotator_id=user.id):
                return f"Pair #{pair_id} was already saved.", None
            return f"Pair #{pair_id} is not assigned to you; here is your current pair.", None
        if _stamp(lease.served_at) != stamp:
            # Re-served (e.g. in another tab after the lease expired), possibly with sides swapped.
            return f"Pair #{pair_id} was shown again (in another tab?); please judge it again.", None
        return "", lease

    def _top_up_if_low(self, pairs_open: int) -> None:
        topper = self.services.pool_topper
        if topper is None or pairs_open >= self.ws.config.sampling.pool_min_open_pairs:
            return
        try:
            topper.request_top_up()
        except Exception:  # noqa: BLE001 - a sampler problem must not lose the annotator's judgment
            log.exception("pool top-up request failed")
