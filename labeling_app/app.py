"""The labeling page as a Gradio app (`build_app`): who is signed in, the guidelines, the annotator page and the
stage-1 panel, and a link to the operator console for operators. Annotators' sessions build only these blocks;
the console is its own app (`operator.page`), and `server` mounts both on one server."""

from __future__ import annotations

from typing import Any

import gradio as gr

from labeling_app.annotation import Annotation
from labeling_app.annotator_page import FAST, build_annotator_page
from labeling_app.auth import SessionStore, Throttle, current_user
from labeling_app.demonstrations import DEMONSTRATION_CSS, build_demonstration_panel
from labeling_app.modes import build_labeling_modes
from labeling_app.render import SCREEN_CSS, plain_markdown
from labeling_app.rich_text import PANE_CSS, cut_off_guideline
from labeling_app.services import AppServices
from labeling_app.shortcuts import SHORTCUTS_JS
from labeling_app.steps import STEP_CSS
from rlhf_core.workspace import Workspace
from storage import Database

TITLE = "rlhf-loop · labeling"
CONSOLE_LINK = "/operator/"  # where `server` mounts the operator console
# System fonts only: the page must load nothing from other hosts (the default theme pulls Google Fonts).
THEME = gr.themes.Soft(font=["ui-sans-serif", "system-ui", "sans-serif"],
                       font_mono=["ui-monospace", "SFMono-Regular", "monospace"]).set(
    # Text contrast of at least 4.5:1 (WCAG AA; axe-core checks it): Soft's indigo-500 labels and
    # buttons and its grey secondary text are just below.
    button_primary_background_fill="*primary_600", button_primary_background_fill_hover="*primary_700",
    checkbox_label_background_fill_selected="*primary_600", block_label_text_color="*primary_700",
    block_title_text_color="*primary_700", body_text_color_subdued="*neutral_600",
)
CSS = """
#verdicts button { min-height: 48px; font-size: 16px; }
#shortcut-legend, #progress { font-size: 13px; }
#notice p { margin: 0; }
""" + SCREEN_CSS + PANE_CSS + DEMONSTRATION_CSS + STEP_CSS


def _guidelines(ws: Workspace) -> str:
    """The workspace's guidelines file, then how to judge responses cut at the token limit."""
    try:
        text = ws.guidelines_path.read_text(encoding="utf-8")
    except OSError:
        text = f"No guidelines yet: write them in `{plain_markdown(str(ws.guidelines_path))}`."
    return text + "\n\n" + cut_off_guideline(ws.config.labeling.truncated_advice)


def session_store(ws: Workspace, db: Database) -> SessionStore:
    auth = ws.config.auth
    return SessionStore(db, lifetime_s=ws.config.labeling.session_hours * 3600, throttle=Throttle(
        auth.max_failures, auth.window_seconds, auth.cooldown_seconds))


def build_app(ws: Workspace, db: Database, services: AppServices | None = None,
              sessions: SessionStore | None = None) -> gr.Blocks:
    """The labeling page. Needs login and the session store installed when served (see `server.serve`)."""
    services = services or AppServices()
    sessions = session_store(ws, db) if sessions is None else sessions  # a store is falsy while empty
    annotation = Annotation(ws, db, services)
    with gr.Blocks(title=TITLE, analytics_enabled=False) as demo:
        with gr.Row(equal_height=True):
            gr.Markdown("## Which response is better?", elem_id="title")
            whoami = gr.Markdown(elem_id="whoami")
            console = gr.Button("Operator console", link=CONSOLE_LINK, size="sm", variant="secondary", scale=0,
                                min_width=150, visible=False, elem_id="link-operator")
            gr.Button("Log out", link="/logout", size="sm", variant="secondary", scale=0, min_width=90)
        with gr.Accordion("Guidelines", open=False, elem_id="guidelines"):
            guidelines = gr.Markdown(elem_id="guidelines-text")
        page = build_annotator_page(annotation, sessions)
        build_demonstration_panel(page)  # stage 1: "Write a better answer" (labeling.demonstrations)
        build_labeling_modes(page, ws, db, demo)  # e.g. step labels (labeling.mode, labeling.step_sets)

        def page_head(request: gr.Request) -> list[Any]:
            """Once per page load: who is signed in, the guidelines, the console's link for operators."""
            user = current_user(sessions, db, request)
            return [f"Signed in as **{plain_markdown(user.username)}** ({user.role})", _guidelines(ws),
                    gr.Button(visible=user.role == "operator")]

        demo.load(page_head, outputs=[whoami, guidelines, console], api_visibility="private", queue=False,
                  show_progress="hidden", postprocess=False)
        page.on_screen(demo.load(page.load, outputs=page.screen_outputs, api_name="next_pair",
                                 **FAST))
        demo.load(None, js=SHORTCUTS_JS)
    return demo
