"""Screen state to Gradio outputs. Prompts and model outputs are shown as Markdown rendered and
sanitized on the server (`rich_text`: an allowlist of tags, no links, images or scripts) beside
their raw text, which the page's "show raw text" toggle swaps in; no text of theirs is ever HTML.

Outputs are plain values only: Gradio rebuilds a component for every update dict it is sent, even
for `gr.skip()` (~0.3 ms each), which dominated the cost of a judgment before
(bench/labeling_load.py).
"""

from __future__ import annotations

import html
import re
from functools import lru_cache
from typing import Any

from labeling_app.annotation import Screen
from labeling_app.rich_text import CACHED_TEXTS, pane_html, prompt_html

ROLE_LABELS = {"system": "System", "user": "User", "assistant": "Assistant", "tool": "Tool"}

NO_PAIRS_MESSAGE = (
    "### Nothing to judge right now\n"
    "All open pairs are judged or assigned to someone else. New pairs are being sampled; "
    "this page checks every few seconds and shows the next pair as soon as one arrives. "
    "No need to reload."
)


def empty_markdown(screen: Screen) -> str:
    """The "nothing to judge" area: live progress while the model prepares pairs, else NO_PAIRS_MESSAGE."""
    sampling = screen.sampling
    if sampling is None:
        return NO_PAIRS_MESSAGE
    step = ("Loading the model (the first time it is converted, which takes a little while) ..."
            if sampling.loading else f"**{sampling.ready} of {sampling.wanted}** pairs ready")
    return (f"### Preparing the first pairs from the model\n{step}\n\n"
            "The first pair shows here as soon as it exists. No need to reload.")


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


@lru_cache(maxsize=CACHED_TEXTS)
def prompt_pane(turns: tuple[tuple[str, str], ...]) -> str:
    """The prompt's pane (rendered once per process and conversation, as responses are)."""
    return prompt_html(turns, prompt_text(list(turns)), role_label)


def hint_html(hint: str) -> str:
    """An AI judge's suggestion under the prompt (labeling.show_suggestions); escaped, the judge's name is an
    operator's choice."""
    return f'<p id="judge-hint" class="judge-hint"><em>{html.escape(hint)}</em></p>' if hint else ""


def progress_markdown(screen: Screen) -> str:
    p = screen.progress
    return f"**Today:** {p.judged_since} · **Total:** {p.judged_total} · **Pairs left:** {p.pairs_open}"


def screen_values(screen: Screen) -> list[Any]:
    """Values for `AnnotatorPage.screen_outputs`, in that order: plain values only, already in wire
    form (the events run with `postprocess=False`). Which area shows (the pair or "nothing to
    judge") follows the token on the client (`SCREEN_JS`), so no component is rebuilt per event."""
    pair = screen.pair
    return [
        (prompt_pane(tuple(pair.turns)) + hint_html(pair.hint)) if pair else "",
        pane_html("Response A", pair.left_text, cut_tokens=pair.left_cut_tokens) if pair else "",
        pane_html("Response B", pair.right_text, cut_tokens=pair.right_cut_tokens) if pair else "",
        pair.token if pair else "",
        progress_markdown(screen),
        screen.notice,  # fixed sentences with numbers only; never user or model text
        None,  # strength: back to none
        "",  # reason: cleared
        empty_markdown(screen),  # numbers and fixed sentences only
        str(screen.undo_id or ""),  # the judgment "Undo" takes back; "" hides the button
    ]


# Runs in the browser after every screen event (no server call): shows the pair area while a pair
# is served, else the "nothing to judge" area, and while that shows, presses its "Check now"
# button every few seconds, so a new pair appears without a reload. After a saved verdict it shows
# "Undo" for the undo window (the server checks the window again).
POLL_SECONDS = 3.0
_SCREEN_JS = """
(token, undo) => {
  const empty = !token;
  document.body.classList.toggle("rlhf-empty", empty);
  document.body.classList.add("rlhf-ready");
  if ((undo || "") !== (window.__rlhfUndoId || "")) {  // a new verdict (or none): its own window
    window.__rlhfUndoId = undo || "";
    clearTimeout(window.__rlhfUndo);
    document.body.classList.toggle("rlhf-can-undo", !!undo);
    if (undo) window.__rlhfUndo = setTimeout(() => document.body.classList.remove("rlhf-can-undo"), __UNDO_MS__);
  }
  clearTimeout(window.__rlhfPoll);
  if (empty) {
    window.__rlhfPoll = setTimeout(() => {
      const check = document.getElementById("btn-check");
      if (check && document.body.classList.contains("rlhf-empty")) check.click();
    }, __POLL_MS__);
  }
}
"""


def screen_js(undo_seconds: float) -> str:
    """SCREEN_JS for a page whose undo window is `undo_seconds`."""
    return (_SCREEN_JS.replace("__POLL_MS__", str(int(POLL_SECONDS * 1000)))
            .replace("__UNDO_MS__", str(int(undo_seconds * 1000))))


# The "show raw text" toggle: a class on the page, no server call.
RAW_TOGGLE_JS = "(raw) => { document.body.classList.toggle('rlhf-raw', !!raw); }"

# Before the first screen event has run, neither area shows.
SCREEN_CSS = """
body:not(.rlhf-ready) #pair-area, body:not(.rlhf-ready) #empty-area { display: none !important; }
body.rlhf-empty #pair-area { display: none !important; }
body:not(.rlhf-empty) #empty-area { display: none !important; }
body:not(.rlhf-can-undo) #btn-undo { display: none !important; }
body.rlhf-raw .pane .rendered, body:not(.rlhf-raw) .pane .raw { display: none !important; }
"""
