"""The annotator's page: prompt, responses A (left) and B (right) as Markdown (or raw text, toggled on
the page), verdict buttons, progress, and "Undo" for a few seconds after each verdict.

Handlers are thin: find the logged-in user (cached session lookup), call `Annotation` (one
database transaction), render plain values with `render`. No lock is held around Python work:
the database serialises what must be serialised inside storage's transaction.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import gradio as gr

from labeling_app.annotation import Annotation, Screen, own_notice
from labeling_app.auth import SessionStore, current_user
from labeling_app.render import NO_PAIRS_MESSAGE, RAW_TOGGLE_JS, screen_js, screen_values
from labeling_app.shortcuts import LEGEND
from storage import STRENGTHS, DatabaseUnavailable, JudgmentError, SessionUser

MAX_REASON_CHARS = 5000
# Small DB-only events: no queue round trips; inputs are plain strings and outputs are already in
# wire form (see render.py), so Gradio's pre- and postprocessing is skipped.
FAST = {"queue": False, "show_progress": "hidden", "preprocess": False, "postprocess": False}
# A PostgreSQL restart takes a few seconds: an event that only reads (the page's load, "Check now") waits that out
# rather than fail. A verdict is not retried blindly (its commit may have landed): the annotator is told instead.
READ_WAIT_S = 10.0
DATABASE_AWAY = ("The database cannot be reached just now (it may be restarting). Wait a few seconds and try "
                 "again: a verdict that was not saved is asked again.")


@dataclass
class AnnotatorPage:
    annotation: Annotation
    sessions: SessionStore
    screen_outputs: list[gr.components.Component]
    token: gr.Textbox
    notice: gr.Markdown
    strength: gr.Radio
    reason: gr.Textbox
    buttons: dict[str, gr.Button]
    check: gr.Button
    undo: gr.Button
    undo_token: gr.Textbox
    raw_toggle: gr.Checkbox

    def user(self, request: gr.Request) -> SessionUser:
        return current_user(self.sessions, self.annotation.db, request)

    def run(self, event: Callable[[], Screen], *, wait_s: float = 0.0) -> list[Any]:
        """One event's screen as output values; refusals become a message on the page. A database that went away
        is tried again for up to `wait_s` seconds (0.25, 0.5, 1, 2, 2, ... s apart), then said in one sentence."""
        deadline, pause = time.monotonic() + wait_s, 0.25
        while True:
            try:
                return screen_values(event())
            except JudgmentError as exc:
                raise gr.Error(_refusal(str(exc)), print_exception=False) from exc
            except DatabaseUnavailable as exc:
                if time.monotonic() + pause > deadline:
                    raise gr.Error(DATABASE_AWAY, print_exception=False) from exc
                time.sleep(pause)
                pause = min(2 * pause, 2.0)

    def load(self, request: gr.Request) -> list[Any]:
        """The page as it stands for this user (load and reload)."""
        return self.run(lambda: self.annotation.screen(self.user(request)), wait_s=READ_WAIT_S)

    def on_screen(self, event: Any) -> None:  # noqa: ANN401 - a Gradio dependency
        """Chain the client-side area switch after an event that shows a screen."""
        event.then(None, inputs=[self.token, self.undo_token], js=screen_js(self.annotation.undo_seconds),
                   queue=False, show_progress="hidden")


def _refusal(message: str) -> str:
    if "disabled annotator" in message:
        return "This account is disabled or no longer exists."
    return message


def build_annotator_page(annotation: Annotation, sessions: SessionStore) -> AnnotatorPage:
    """Lay out the page inside the current Blocks context and wire its events."""
    with gr.Row(elem_id="status-row"):
        progress = gr.Markdown(elem_id="progress")
        notice = gr.Markdown(elem_id="notice")
        undo = gr.Button("Undo  [U]", size="sm", variant="secondary", scale=0, min_width=110, elem_id="btn-undo")
    with gr.Column(elem_id="pair-area"):
        raw_toggle = gr.Checkbox(False, label="Show raw text (no Markdown formatting)", container=False,
                                 elem_id="raw-toggle")
        # Panes are server-rendered, sanitized HTML (rich_text); no script of Gradio's runs on them.
        prompt = gr.HTML(elem_id="prompt", elem_classes=["pane"], js_on_load=None)
        with gr.Row(equal_height=True):
            left = gr.HTML(elem_id="response-left", elem_classes=["pane", "response"], js_on_load=None)
            right = gr.HTML(elem_id="response-right", elem_classes=["pane", "response"], js_on_load=None)
        with gr.Row(elem_id="verdicts"):
            buttons = {
                "left": gr.Button("◀ A better  [1]", variant="primary", elem_id="btn-left"),
                "right": gr.Button("B better ▶  [2]", variant="primary", elem_id="btn-right"),
                "tie": gr.Button("Tie  [3]", elem_id="btn-tie"),
                "both_bad": gr.Button("Both bad  [4]", elem_id="btn-both-bad"),
                "skip": gr.Button("Skip  [5]", variant="secondary", elem_id="btn-skip"),
            }
        with gr.Row():
            strength = gr.Radio(list(STRENGTHS), value=None, label="How sure? (optional)  [Q/W/E]",
                                elem_id="strength", scale=1)
            reason = gr.Textbox(label="Reason (optional)", placeholder="Why? Keys are off while typing here.",
                                max_length=MAX_REASON_CHARS, elem_id="reason", scale=2)
        gr.Markdown(LEGEND, elem_id="shortcut-legend")
    with gr.Column(elem_id="empty-area"):
        empty = gr.Markdown(NO_PAIRS_MESSAGE, elem_id="no-pairs")
        check = gr.Button("Check now", size="sm", variant="secondary", elem_id="btn-check")
    token = gr.Textbox(visible=False, elem_id="serve-token")
    undo_token = gr.Textbox(visible=False, elem_id="undo-token")

    page = AnnotatorPage(
        annotation=annotation, sessions=sessions,
        screen_outputs=[prompt, left, right, token, progress, notice, strength, reason, empty, undo_token],
        token=token, notice=notice, strength=strength, reason=reason, buttons=buttons, check=check,
        undo=undo, undo_token=undo_token, raw_toggle=raw_toggle,
    )
    _wire(page)
    return page


def _judge_handler(page: AnnotatorPage, verdict: str) -> Callable[..., list[Any]]:
    def judge(token: str, strength: str | None, reason: str, request: gr.Request) -> list[Any]:
        return page.run(lambda: page.annotation.judge(page.user(request), token, verdict, strength, reason))

    judge.__name__ = f"judge_{verdict}"
    return judge


def _wire(page: AnnotatorPage) -> None:
    for verdict, button in page.buttons.items():
        if verdict == "skip":
            continue
        page.on_screen(button.click(_judge_handler(page, verdict), inputs=[page.token, page.strength, page.reason],
                                    outputs=page.screen_outputs, api_name=f"judge_{verdict}", **FAST))

    def skip(token: str, request: gr.Request) -> list[Any]:
        return page.run(lambda: page.annotation.skip(page.user(request), token))

    page.on_screen(page.buttons["skip"].click(skip, inputs=[page.token], outputs=page.screen_outputs,
                                              api_name="skip_pair", **FAST))

    def check(notice: str, undo_id: str, request: gr.Request) -> list[Any]:
        """"Check now" (pressed every few seconds by the page while nothing is shown): a new pair?
        The last notice stays (if it is one of ours), so "Saved: ..." does not vanish meanwhile, and
        so does Undo for the rest of its window (the server checks the window when it is pressed)."""
        undo = int(undo_id) if str(undo_id or "").isdigit() else None
        return page.run(lambda: replace(page.annotation.screen(page.user(request), own_notice(notice)), undo_id=undo),
                        wait_s=READ_WAIT_S)

    page.on_screen(page.check.click(check, inputs=[page.notice, page.undo_token], outputs=page.screen_outputs,
                                    api_visibility="private", **FAST))

    def undo(undo_id: str, request: gr.Request) -> list[Any]:
        client = getattr(request, "client", None)
        return page.run(lambda: page.annotation.undo(page.user(request), undo_id, getattr(client, "host", "") or ""))

    page.on_screen(page.undo.click(undo, inputs=[page.undo_token], outputs=page.screen_outputs,
                                   api_name="undo_judgment", **FAST))
    page.raw_toggle.change(None, inputs=[page.raw_toggle], js=RAW_TOGGLE_JS, queue=False, show_progress="hidden")
