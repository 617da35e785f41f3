"""The annotator's page: prompt, responses A (left) and B (right), verdict buttons, progress.

Handlers are thin: check the user on the server, call `Annotation`, render with `render`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gradio as gr

from labeling_app.annotation import Annotation, Screen
from labeling_app.auth import require_user
from labeling_app.render import NO_PAIRS_MESSAGE, screen_updates
from labeling_app.shortcuts import LEGEND
from storage import STRENGTHS, Annotator, JudgmentError

POLL_SECONDS = 3.0
MAX_REASON_CHARS = 5000


@dataclass
class AnnotatorPage:
    annotation: Annotation
    screen_outputs: list[gr.components.Component | gr.blocks.BlockContext]
    token: gr.Textbox
    strength: gr.Radio
    reason: gr.Textbox
    timer: gr.Timer
    buttons: dict[str, gr.Button]

    def user(self, request: gr.Request) -> Annotator:
        return require_user(self.annotation.db, request)

    def show(self, user: Annotator) -> list[Any]:
        """The page as it stands for this user (load and reload); caller holds the gate."""
        return screen_updates(self.annotation.screen(user))


def build_annotator_page(annotation: Annotation) -> AnnotatorPage:
    """Lay out the page inside the current Blocks context and wire its events."""
    with gr.Row(elem_id="status-row"):
        progress = gr.Markdown(elem_id="progress")
        notice = gr.Markdown(elem_id="notice")
    with gr.Column(visible=False, elem_id="pair-area") as pair_area:
        prompt = gr.Textbox(label="Prompt", interactive=False, lines=1, max_lines=16, elem_id="prompt",
                            autoscroll=False)
        with gr.Row(equal_height=True):
            left = gr.Textbox(label="A", interactive=False, lines=6, max_lines=40, elem_id="response-left",
                              elem_classes=["response"], autoscroll=False)
            right = gr.Textbox(label="B", interactive=False, lines=6, max_lines=40, elem_id="response-right",
                               elem_classes=["response"], autoscroll=False)
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
    with gr.Column(visible=False, elem_id="empty-area") as empty_area:
        gr.Markdown(NO_PAIRS_MESSAGE, elem_id="no-pairs")
    token = gr.Textbox(visible=False, elem_id="serve-token")
    timer = gr.Timer(POLL_SECONDS, active=False)

    page = AnnotatorPage(
        annotation=annotation,
        screen_outputs=[prompt, left, right, token, progress, notice, strength, reason, pair_area, empty_area, timer],
        token=token, strength=strength, reason=reason, timer=timer, buttons=buttons,
    )
    _wire(page)
    return page


def _judge_handler(page: AnnotatorPage, verdict: str) -> Callable[..., list[Any]]:
    def judge(token: str, strength: str | None, reason: str, request: gr.Request) -> list[Any]:
        with page.annotation.gate:
            user = page.user(request)
            try:
                screen = page.annotation.judge(user, token, verdict, strength, reason)
            except JudgmentError as exc:
                raise gr.Error(str(exc), print_exception=False) from exc
        return screen_updates(screen)

    judge.__name__ = f"judge_{verdict}"
    return judge


def _wire(page: AnnotatorPage) -> None:
    # Small DB-only events: no queue round trips; outputs are already in wire form (see render.py).
    fast = {"queue": False, "show_progress": "hidden", "postprocess": False}
    for verdict, button in page.buttons.items():
        if verdict == "skip":
            continue
        button.click(_judge_handler(page, verdict), inputs=[page.token, page.strength, page.reason],
                     outputs=page.screen_outputs, api_name=f"judge_{verdict}", **fast)

    def skip(token: str, request: gr.Request) -> list[Any]:
        with page.annotation.gate:
            screen = page.annotation.skip(page.user(request), token)
        return screen_updates(screen)

    page.buttons["skip"].click(skip, inputs=[page.token], outputs=page.screen_outputs, api_name="skip_pair", **fast)

    def poll(token: str, request: gr.Request) -> list[Any]:
        """While nothing is shown, look for a new pair; keep the page as it is until one arrives."""
        if token:
            return [gr.skip() for _ in page.screen_outputs[:-1]] + [gr.Timer(active=False)]
        with page.annotation.gate:
            screen: Screen = page.annotation.screen(page.user(request))
        if screen.pair is None:
            return [gr.skip() for _ in page.screen_outputs]
        return screen_updates(screen)

    page.timer.tick(poll, inputs=[page.token], outputs=page.screen_outputs, api_visibility="private", **fast)
