"""Stage 1 on the labeling page: "Write a better answer" under the pair, for supervised fine-tuning.

Shown when `labeling.demonstrations` is "optional" (a closed panel under every pair) or "every_n" (it opens,
and only shows, on every `labeling.demonstration_every`-th pair an annotator is served); with "off" (the
default) the page has no panel at all. The annotator writes an answer, or starts from response A or B (the raw
text, fetched from the server for the serve on screen) and edits it; "Save answer" stores it once (a double
click adds nothing), and an edit also counts as the preference "edited > original" ("Start blank" forgets the
response it started from: what is written next is an answer of its own). The text box is a plain
textarea (inert), its rules are the reason box's (length, no control characters), and every event re-reads the
user from the session and the lease from the database: nothing the client says about the pair is trusted.
Writing is never required: the verdict buttons work as before.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gradio as gr

from labeling_app.annotator_page import AnnotatorPage
from labeling_app.render import plain_markdown
from storage import (
    MAX_DEMONSTRATION_CHARS,
    DemonstrationError,
    JudgmentError,
    SessionUser,
    parse_serve_token,
    record_demonstration,
    served_texts,
)

HELP = ("Write the answer you would have wanted for this prompt, or start from response A or B and improve it. "
        "Saved answers teach the model by example (supervised fine-tuning); an edit also counts as preferring "
        "your version to the original. Judge the pair as usual afterwards. Keys are off while you type here "
        "(`Esc` leaves the box).")
# Hides with the pair area: before the first screen and while there is nothing to judge.
DEMONSTRATION_CSS = """
body:not(.rlhf-ready) #demo-area, body.rlhf-empty #demo-area { display: none !important; }
"""
# A new pair on screen starts a fresh answer (no server call in "optional" mode).
CLEAR_JS = "() => ['', '', '']"
SIDES = {"left": "A", "right": "B"}
FAST = {"queue": False, "show_progress": "hidden"}


@dataclass
class DemonstrationPanel:
    accordion: gr.Accordion
    text: gr.Textbox
    source: gr.Textbox  # "left", "right" or "": the response the answer was started from
    status: gr.Markdown
    start: dict[str, gr.Button]
    save: gr.Button
    blank: gr.Button  # an empty box that is no edit of either response


def saved_sentence(pair_id: int, created: bool, edited: bool, side: str) -> str:
    """What the panel says after a save (fixed words and numbers only)."""
    if not created:
        return f"Already saved: this answer to pair #{pair_id} is stored once."
    if edited:
        return (f"Saved your edit of {SIDES[side]} on pair #{pair_id}: it also counts as preferring your version "
                "to the original.")
    return f"Saved your answer to pair #{pair_id}."


def panel_shown(mode: str, every: int, judged_total: int) -> bool:
    """Whether the panel is on the pair an annotator with `judged_total` judgments is being served: always with
    "optional", on every `every`-th pair (the every-th, 2·every-th, ...) with "every_n"."""
    return mode == "optional" or (mode == "every_n" and (judged_total + 1) % every == 0)


def build_demonstration_panel(page: AnnotatorPage) -> DemonstrationPanel | None:
    """The panel under the pair, wired to the page's serve token; None (nothing on the page) with "off"."""
    labeling = page.annotation.ws.config.labeling
    if labeling.demonstrations == "off":
        return None
    optional = labeling.demonstrations == "optional"
    with gr.Column(elem_id="demo-area"):
        with gr.Accordion("Write a better answer (optional)", open=False, visible=optional,
                          elem_id="demo-panel") as accordion:
            gr.Markdown(HELP, elem_id="demo-help")
            with gr.Row():
                start = {side: gr.Button(f"Start from {label}", size="sm", variant="secondary",
                                         elem_id=f"btn-demo-from-{side}") for side, label in SIDES.items()}
                blank = gr.Button("Start blank", size="sm", variant="secondary", elem_id="btn-demo-blank")
            text = gr.Textbox(label="Your answer", lines=6, max_lines=30, max_length=MAX_DEMONSTRATION_CHARS,
                              placeholder="Write the answer here, or start from A or B above.", elem_id="demo-text")
            save = gr.Button("Save answer", variant="primary", elem_id="btn-demo-save")
            status = gr.Markdown(elem_id="demo-status")
        source = gr.Textbox(visible=False, elem_id="demo-source")
    panel = DemonstrationPanel(accordion=accordion, text=text, source=source, status=status, start=start, save=save,
                               blank=blank)
    _wire(page, panel, optional)
    return panel


def _wire(page: AnnotatorPage, panel: DemonstrationPanel, optional: bool) -> None:
    db, labeling = page.annotation.db, page.annotation.ws.config.labeling

    def user(request: gr.Request) -> SessionUser:
        return page.user(request)  # gr.Error when not logged in; storage checks the account is active

    def start_from(side: str):  # noqa: ANN202 - a Gradio handler
        def handler(token: str, request: gr.Request) -> list[Any]:
            try:
                texts = served_texts(db, user(request).id, token)
            except JudgmentError as exc:
                raise gr.Error("This account is disabled or no longer exists.", print_exception=False) from exc
            if texts is None:
                return [gr.skip(), gr.skip(), "This pair is no longer shown to you; reload the page."]
            return [texts[0] if side == "left" else texts[1], side, f"Started from {SIDES[side]}: edit it, then save."]

        handler.__name__ = f"demonstration_from_{side}"
        return handler

    def save(token: str, text: str, source: str, request: gr.Request) -> str:
        who = user(request)
        client = getattr(request, "client", None)
        try:
            saved = record_demonstration(db, who.id, token=token, text=text, start_side=source or None,
                                         actor=who.username, address=getattr(client, "host", "") or "")
        except DemonstrationError as exc:
            return plain_markdown(str(exc))  # our own sentence, shown as text
        except JudgmentError as exc:
            raise gr.Error("This account is disabled or no longer exists.", print_exception=False) from exc
        return saved_sentence(saved.pair_id, saved.created, saved.edited, source or "left")

    def on_new_pair(token: str, request: gr.Request) -> list[Any]:
        """every_n: show (and open) the panel on every n-th pair this annotator is served."""
        if parse_serve_token(token) is None:
            return [gr.Accordion(visible=False), "", "", ""]
        judged = page.annotation.progress(user(request)).judged_total
        shown = panel_shown(labeling.demonstrations, labeling.demonstration_every, judged)
        return [gr.Accordion(visible=shown, open=shown), "", "", ""]

    for side, button in panel.start.items():
        button.click(start_from(side), inputs=[page.token], outputs=[panel.text, panel.source, panel.status],
                     api_name=f"demonstration_from_{side}", **FAST)
    panel.save.click(save, inputs=[page.token, panel.text, panel.source], outputs=[panel.status],
                     api_name="save_demonstration", **FAST)
    def start_blank(request: gr.Request) -> list[str]:
        user(request)
        return ["", "", "Blank: write your own answer."]

    panel.blank.click(start_blank, outputs=[panel.text, panel.source, panel.status], api_name="demonstration_blank",
                      **FAST)
    clear = [panel.text, panel.source, panel.status]
    if optional:
        page.token.change(None, js=CLEAR_JS, outputs=clear, **FAST)
    else:
        page.token.change(on_new_pair, inputs=[page.token], outputs=[panel.accordion, *clear],
                          api_visibility="private", **FAST)
