"""What every part of the operator tab shares: the per-event operator check and number formatting.

Every operator event, including ones only a timer fires, goes through `OperatorContext.checked`:
the user is re-read from the database and must hold the operator role, so an annotator who calls
an event directly (gradio_client, or a raw POST naming its fn_index) gets an error, not data.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import gradio as gr

from labeling_app.auth import require_user
from labeling_app.gate import DbGate
from labeling_app.services import AppServices
from rlhf_core.service.actor import Actor, audit
from rlhf_core.workspace import Workspace
from storage import Annotator, Database

DASH = "—"
# Operator actions are callable through the API (and role-checked there) but not listed in the public
# API docs every logged-in user can open; events only the page itself fires are private.
OPERATOR_API = "undocumented"
PRIVATE = {"api_visibility": "private", "queue": False, "show_progress": "hidden"}


@dataclass
class OperatorContext:
    ws: Workspace
    db: Database
    services: AppServices
    gate: DbGate

    @contextmanager
    def checked(self, request: gr.Request | None) -> Iterator[Annotator]:
        """Hold the database gate and yield the logged-in operator; `gr.Error` for anyone else."""
        with self.gate:
            yield require_user(self.db, request, role="operator")

    def actor(self, user: Annotator, request: gr.Request | None) -> Actor:
        """The operator as the action service's actor: their name and client address."""
        client = getattr(request, "client", None)
        return Actor.operator(user.username, getattr(client, "host", "") or "")

    def audit(self, user: Annotator, request: gr.Request | None, action: str, **params: Any) -> None:
        """One audit row for an operator action that is no service action (sampling, "Try it")."""
        audit(self.db, self.actor(user, request), action, **params)

    def require(self, request: gr.Request | None) -> Annotator:
        """The operator check alone, for events whose work must not hold the gate (long exports)."""
        with self.gate:
            return require_user(self.db, request, role="operator")


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def fmt_num(value: Any, digits: int = 3) -> str:
    """A metric for a table cell: `digits` significant figures, "—" for missing or non-finite."""
    if not is_number(value):
        return DASH
    if isinstance(value, int):
        return str(value)
    return f"{value:.{digits}g}"


def fmt_pct(value: Any) -> str:
    """A share in [0, 1] as a percentage, "—" when unknown."""
    return f"{100 * value:.0f}%" if is_number(value) else DASH
