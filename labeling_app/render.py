"""Screen state to Gradio outputs. Prompts and model outputs only ever go into read-only
textboxes (`<textarea>` values), so no HTML, Markdown, script or image in them is interpreted.

Outputs are plain values wherever possible: Gradio rebuilds a component for every update dict
it is sent (~0.3 ms each), which dominated the cost of a judgment before (bench/labeling_load.py).
"""

from __future__ import annotations

import html
import re
from typing import Any

import gradio as gr

from labeling_app.annotation import Screen

ROLE_LABELS = {"system": "System", "user": "User", "assistant": "Assistant", "tool": "Tool"}

NO_PAIRS_MESSAGE = (
    "### Nothing to judge right now\n"
    "All open pairs are judged or assigned to someone else. New pairs are being sampled; "
    "this page checks every few seconds and shows the next pair as soon as one arrives. "
    "No need to reload."
)


def plain_markdown(text: str) -> str:
    """`text` for a Markdown component with every Markdown and HTML construct neutralized."""
    return re.sub(r"([\\`*_{}\[\]()#+\-.!|<>])", r"\\\1", html.escape(str(text), quote=False))


def role_label(role: str) -> str:
    return ROLE_LABELS.get(role, (role or "turn")[:24].capitalize())


def prompt_text(turns: list[tuple[str, str]]) -> str:
    """A single user turn as is; a conversation with each turn headed by its role."""
    if len(turns) == 1 and turns[0][0] == "user":
        return turns[0][1]
    return "\n\n".join(f"── {role_label(role)} ──\n{text}" for role, text in turns)


def progress_markdown(screen: Screen) -> str:
    p = screen.progress
    return f"**Today:** {p.judged_since} · **Total:** {p.judged_total} · **Pairs left:** {p.pairs_open}"


def screen_updates(screen: Screen) -> list[Any]:
    """Values for `AnnotatorPage.screen_outputs`, in that order (already in wire form: the events
    run with `postprocess=False`)."""
    pair = screen.pair
    return [
        prompt_text(pair.turns) if pair else "",
        pair.left_text if pair else "",
        pair.right_text if pair else "",
        pair.token if pair else "",
        progress_markdown(screen),
        screen.notice,  # fixed sentences with numbers only; never user or model text
        None,  # strength: back to none
        "",  # reason: cleared
        gr.update(visible=pair is not None),  # pair area
        gr.update(visible=pair is None),  # "nothing to judge" area
        gr.Timer(active=pair is None),  # poll only while there is nothing to judge
    ]
