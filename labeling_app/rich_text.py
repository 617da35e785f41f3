"""Prompts and responses as an annotator reads them: Markdown rendered on the server, sanitized with
an allowlist, next to the raw text for the page's "show raw text" toggle.

markdown-it-py renders CommonMark plus tables and strikethrough with raw HTML off (an HTML tag in a
response shows as text); nh3 (the Rust sanitizer ammonia) then keeps only the tags in `TAGS`, so
nothing that runs, navigates or loads passes even if the renderer had a hole. Links and images never
become elements: a link shows its text and, beside it, its target as plain text; an image shows
"[image: alt]" and its address, so an annotator can still judge a response by what it points at.
Headings move two levels down (a response's "#" is an h3), under the page's own headings.

A response is rendered once per process and text (`markdown_html` is cached): the labeling page
shows the same texts on every event of a serve, and the load benchmark measures the whole event.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import nh3
from markdown_it import MarkdownIt

from rlhf_core.config import TRUNCATED_ADVICE

TAGS = {"p", "br", "hr", "h3", "h4", "h5", "h6", "ul", "ol", "li", "blockquote", "pre", "code", "em", "strong",
        "s", "table", "thead", "tbody", "tr", "th", "td", "span"}
HEADING_SHIFT = 2
CACHED_TEXTS = 4096

_SANITIZER = nh3.Cleaner(
    tags=TAGS, clean_content_tags={"script", "style"}, url_schemes=set(), link_rel=None,
    attributes={"ol": {"start"}, "th": {"style"}, "td": {"style"}},
    allowed_classes={"span": {"link-target"}}, filter_style_properties={"text-align"},
    strip_comments=True,
)


def _target(href: str) -> str:
    return f' <span class="link-target">({html.escape(href)})</span>'


def _link_open(self: Any, tokens: list, idx: int, options: Any, env: dict) -> str:  # noqa: ANN401, ARG001
    env.setdefault("links", []).append(tokens[idx].attrGet("href") or "")
    return ""


def _link_close(self: Any, tokens: list, idx: int, options: Any, env: dict) -> str:  # noqa: ANN401, ARG001
    links = env.get("links") or [""]
    return _target(links.pop())


def _image(self: Any, tokens: list, idx: int, options: Any, env: dict) -> str:  # noqa: ANN401, ARG001
    token = tokens[idx]
    alt = "".join(child.content for child in token.children or [])
    return f"[image: {html.escape(alt)}]" + _target(token.attrGet("src") or "")


def _heading_open(self: Any, tokens: list, idx: int, options: Any, env: dict) -> str:  # noqa: ANN401, ARG001
    level = min(6, int(tokens[idx].tag[1:]) + HEADING_SHIFT)
    return f"<h{level}>"


def _heading_close(self: Any, tokens: list, idx: int, options: Any, env: dict) -> str:  # noqa: ANN401, ARG001
    return f"</h{min(6, int(tokens[idx].tag[1:]) + HEADING_SHIFT)}>\n"


def _renderer() -> MarkdownIt:
    md = MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False})
    md.enable(["table", "strikethrough"])
    for rule, fn in (("link_open", _link_open), ("link_close", _link_close), ("image", _image),
                     ("heading_open", _heading_open), ("heading_close", _heading_close)):
        md.add_render_rule(rule, fn)
    return md


_MD = _renderer()


@lru_cache(maxsize=CACHED_TEXTS)
def markdown_html(text: str) -> str:
    """`text` as sanitized HTML: Markdown rendered, then only `TAGS` kept (no links, images, scripts)."""
    return _SANITIZER.clean(_MD.render(text, {}))


def raw_html(text: str) -> str:
    """`text` escaped, for a block whose CSS keeps its spaces and line breaks."""
    return html.escape(text, quote=False)


@lru_cache(maxsize=CACHED_TEXTS)
def pane_html(label: str, text: str, *, cut_tokens: int | None = None) -> str:
    """One response's pane: a heading, a "cut off" mark when sampling stopped at the token limit,
    the rendered Markdown and the raw text (the page shows one of the two)."""
    cut = (f'<p class="cut-off" role="note">Cut off at {cut_tokens} tokens: the model had not finished.</p>'
           if cut_tokens is not None else "")
    return (f'<h2 class="pane-label">{html.escape(label)}</h2>{cut}'
            f'<div class="rendered md" role="region" tabindex="0" aria-label="{html.escape(label)}, formatted">'
            f'{markdown_html(text)}</div>'
            f'<div class="raw" role="region" tabindex="0" aria-label="{html.escape(label)}, raw text">'
            f'{raw_html(text)}</div>')


def prompt_html(turns: Sequence[tuple[str, str]], raw: str, role_label: Any) -> str:  # noqa: ANN401
    """The prompt's pane: each turn rendered (headed by its role unless it is a single user turn),
    and `raw` (the conversation as plain text) for the raw view."""
    if len(turns) == 1 and turns[0][0] == "user":
        rendered = markdown_html(turns[0][1])
    else:
        rendered = "".join(f'<div class="turn"><p class="turn-role">{html.escape(role_label(role))}</p>'
                           f"{markdown_html(text)}</div>" for role, text in turns)
    return ('<h2 class="pane-label">Prompt</h2>'
            f'<div class="rendered md" role="region" tabindex="0" aria-label="Prompt, formatted">{rendered}</div>'
            f'<div class="raw" role="region" tabindex="0" aria-label="Prompt, raw text">{raw_html(raw)}</div>')


def cut_off_guideline(advice: str) -> str:
    """The guidelines' paragraph on cut responses, with the advice `labeling.truncated_advice` chose."""
    return ("### Cut-off responses\n"
            'A response marked "Cut off at N tokens" stopped at the sampler\'s token limit, not because '
            f"the model had finished. {TRUNCATED_ADVICE[advice]}")


# Panes scroll inside themselves (keyboard-scrollable: each region takes focus); code keeps its lines.
PANE_CSS = """
.pane { font-size: 15px; line-height: 1.5; }
.pane .pane-label { font-size: 14px; font-weight: 600; margin: 0 0 4px; }
.pane .rendered, .pane .raw { max-height: 60vh; overflow: auto; padding: 8px 12px; border-radius: 8px;
  border: 1px solid var(--border-color-primary); background: var(--block-background-fill); }
#prompt .rendered, #prompt .raw { max-height: 30vh; }
.pane .raw { white-space: pre-wrap; overflow-wrap: anywhere; font-family: var(--font-mono); font-size: 14px; }
.pane pre { white-space: pre; overflow-x: auto; padding: 8px; border-radius: 6px;
  background: var(--background-fill-secondary); }
.pane code { font-family: var(--font-mono); }
.pane table { border-collapse: collapse; }
.pane th, .pane td { border: 1px solid var(--border-color-primary); padding: 2px 8px; }
.pane .link-target { overflow-wrap: anywhere; font-size: 0.92em; }
.pane .turn-role { font-weight: 600; margin: 8px 0 2px; }
.pane .cut-off { margin: 0 0 6px; padding: 4px 8px; border-radius: 6px; font-weight: 600;
  background: #fff4e5; color: #6b3600; border: 1px solid #e8a33d; }
"""
