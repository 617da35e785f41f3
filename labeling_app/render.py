"""Screen state to Gradio updates. Prompts and model outputs only ever go into read-only
textboxes (`<textarea>` values), so no HTML, Markdown, script or image in them is interpreted."""

from __future__ import annotations

import html
import re
from typing import Any

import gradio as gr

from labeling_app.annotation import PairView, Screen

MAX_TURN_BOXES = 6  # conversation turns shown in their own box; earlier ones are folded into the first
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


def fold_turns(turns: list[tuple[str, str]], slots: int = MAX_TURN_BOXES) -> list[tuple[str, str]]:
    """At most `slots` (label, text) boxes: the last turns each in their own box, earlier ones
    folded into the first box with their roles written inline."""
    labelled = [(role_label(role), text) for role, text in turns]
    if len(labelled) <= slots:
        return labelled
    head, tail = labelled[: len(labelled) - slots + 1], labelled[len(labelled) - slots + 1:]
    folded = "\n\n".join(f"[{label}]\n{text}" for label, text in head)
    return [(f"Earlier turns ({len(head)})", folded), *tail]


def turn_updates(pair: PairView | None) -> list[Any]:
    boxes = fold_turns(pair.turns) if pair else []
    updates = [gr.update(value=text, label=label, visible=True) for label, text in boxes]
    # One dict per box: Gradio's postprocessing edits update dicts in place.
    return updates + [gr.update(value="", visible=False) for _ in range(MAX_TURN_BOXES - len(updates))]


def progress_markdown(screen: Screen) -> str:
    p = screen.progress
    return f"**Today:** {p.judged_since} · **Total:** {p.judged_total} · **Pairs left:** {p.pairs_open}"


def screen_updates(screen: Screen) -> list[Any]:
    """Values for `AnnotatorPage.screen_outputs`, in that order."""
    pair = screen.pair
    return [
        *turn_updates(pair),
        pair.left_text if pair else "",
        pair.right_text if pair else "",
        pair.token if pair else "",
        gr.update(visible=pair is not None),  # pair area
        gr.update(visible=pair is None),  # "nothing to judge" area
        progress_markdown(screen),
        screen.notice,  # fixed sentences with numbers only; never user or model text
        None,  # strength: back to none
        "",  # reason: cleared
        gr.Timer(active=pair is None),  # poll only while there is nothing to judge
    ]
