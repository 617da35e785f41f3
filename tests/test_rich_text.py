"""Markdown on the labeling page (labeling_app.rich_text): what renders, and that nothing hostile
survives the sanitizer. The browser side (no dialog, no request) is tests/test_labeling_page_browser.py."""

from __future__ import annotations

import re

import pytest

from labeling_app.render import role_label
from labeling_app.rich_text import TAGS, cut_off_guideline, markdown_html, pane_html, prompt_html
from rlhf_core.config import TRUNCATED_ADVICE

# Hostile texts a model (or an imported prompt) might hold; each must come out as inert text.
XSS_CORPUS = [
    "<script>alert(1)</script>",
    "<img src=x onerror=alert(1)>",
    "<svg onload=alert(1)><circle r=1 /></svg>",
    "<iframe src=//127.0.0.2:9/frame></iframe>",
    '<a href="javascript:alert(1)">click</a>',
    "[click me](javascript:alert(1))",
    "[data](data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==)",
    "![pixel](http://127.0.0.2:9/pixel.png)",
    "![pixel][ref]\n\n[ref]: http://127.0.0.2:9/ref.png",
    "<http://127.0.0.2:9/autolink>",
    '<div style="background:url(http://127.0.0.2:9/css.png)">css</div>',
    "<style>body { background: url(http://127.0.0.2:9/style.png) }</style>",
    '<link rel=stylesheet href="http://127.0.0.2:9/x.css">',
    '<object data="http://127.0.0.2:9/o.swf"></object>',
    '<form action="http://127.0.0.2:9/f"><button>go</button></form>',
    "<details open ontoggle=alert(1)>x</details>",
    "<math><mtext><table><mglyph><style><img src=x onerror=alert(1)>",
    "${alert(1)} {{constructor.constructor('alert(1)')()}}",
]


def tags_of(html: str) -> set[str]:
    return {m.lower() for m in re.findall(r"<\s*([a-zA-Z][a-zA-Z0-9]*)", html)}


def test_markdown_renders_lists_code_tables_and_emphasis() -> None:
    html = markdown_html("# Title\n\n- one\n- two\n\n1. first\n\n```python\ndef f():\n    return 1\n```\n\n"
                         "| a | b |\n|:--|--:|\n| 1 | 2 |\n\n**bold** *it* `code` ~~gone~~\n\n> quoted")
    assert "<h3>Title</h3>" in html  # headings sit two levels under the page's own
    assert "<ul>\n<li>one</li>\n<li>two</li>\n</ul>" in html and "<ol>" in html
    assert "<pre><code>def f():\n    return 1\n</code></pre>" in html  # line breaks and indentation kept
    assert '<th style="text-align:left">a</th>' in html and '<td style="text-align:right">2</td>' in html
    assert "<strong>bold</strong>" in html and "<em>it</em>" in html and "<code>code</code>" in html
    assert "<s>gone</s>" in html and "<blockquote>" in html


def test_links_and_images_become_text_with_their_address() -> None:
    html = markdown_html("See [the docs](https://example.org/a?b=1&c=2) and ![a cat](http://img.example/cat.png).")
    assert "<a" not in html and "<img" not in html and "href" not in html and "src=" not in html
    assert 'the docs <span class="link-target">(https://example.org/a?b=1&amp;c=2)</span>' in html
    assert '[image: a cat] <span class="link-target">(http://img.example/cat.png)</span>' in html


@pytest.mark.parametrize("text", XSS_CORPUS)
def test_hostile_text_comes_out_inert(text: str) -> None:
    html = markdown_html(text)
    assert tags_of(html) <= TAGS, html
    assert not re.search(r"<[^>]*\son\w+\s*=", html, re.I), html  # no event handler attribute
    assert not re.search(r"<[^>]*\s(href|src|action|data|srcset|formaction)\s*=", html, re.I), html
    assert not re.search(r"<[^>]*style=\"(?!text-align:(left|right|center)\")", html), html
    assert "<script" not in html and "<style" not in html and "<iframe" not in html


def test_raw_html_in_a_response_shows_as_text() -> None:
    assert markdown_html("<b>bold?</b>") == "<p>&lt;b&gt;bold?&lt;/b&gt;</p>\n"


def test_panes_carry_both_views_and_the_cut_off_mark() -> None:
    pane = pane_html("Response A", "<i>x</i>\n  y", cut_tokens=64)
    assert '<p class="cut-off" role="note">Cut off at 64 tokens' in pane
    assert '<div class="raw" role="region" tabindex="0" aria-label="Response A, raw text">&lt;i&gt;x&lt;/i&gt;\n  y' \
        in pane
    assert 'aria-label="Response A, formatted"' in pane
    assert "cut-off" not in pane_html("Response B", "done", cut_tokens=None)


def test_prompt_pane_heads_each_turn_with_its_role() -> None:
    turns = [("system", "Be **brief**."), ("user", "Hi <there>")]
    pane = prompt_html(turns, "── System ──\nBe **brief**.\n\n── User ──\nHi <there>", role_label)
    assert '<p class="turn-role">System</p><p>Be <strong>brief</strong>.</p>' in pane
    assert '<p class="turn-role">User</p><p>Hi &lt;there&gt;</p>' in pane
    assert "── User ──\nHi &lt;there&gt;" in pane
    single = prompt_html([("user", "just *this*")], "just *this*", role_label)
    assert "turn-role" not in single and "<em>this</em>" in single


@pytest.mark.parametrize("advice", list(TRUNCATED_ADVICE))
def test_the_guideline_on_cut_responses_follows_the_setting(advice: str) -> None:
    text = cut_off_guideline(advice)
    assert "Cut off at N tokens" in text and TRUNCATED_ADVICE[advice] in text
