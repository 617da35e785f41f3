"""Annotation quality on the operator tab: Fleiss' kappa, position bias, tie and both-bad rates, and
each annotator's agreement with the majority. Values come from `rlhf_core.loop.dashboard.annotation_quality`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gradio as gr

from labeling_app.operator.common import DASH, fmt_pct, is_number

KAPPA_SCOPE = "Fleiss' kappa over a/b/tie/both_bad on pairs with ≥ 2 judgments"
AGREEMENT_COLUMNS = ["annotator", "agreement with majority"]
NO_OVERLAP = ("No pair has two judgments yet, so agreement cannot be measured. Set "
              "`labeling.judgments_per_pair = 2` (or more) in rlhf.toml to have pairs judged by several people.")
# Landis & Koch (1977): the usual words for kappa ranges.
KAPPA_WORDS = ((0.0, "poor"), (0.2, "slight"), (0.4, "fair"), (0.6, "moderate"), (0.8, "substantial"),
               (1.0, "almost perfect"))


@dataclass
class QualitySection:
    summary: gr.Markdown
    agreement: gr.Dataframe
    agreement_note: gr.Markdown

    @property
    def outputs(self) -> list[gr.components.Component]:
        return [self.summary, self.agreement, self.agreement_note]


def kappa_words(kappa: float) -> str:
    for upper, words in KAPPA_WORDS:
        if kappa <= upper:
            return words
    return KAPPA_WORDS[-1][1]


def quality_markdown(q: dict[str, Any]) -> str:
    if q["judgments"] == 0:
        return (f"**Fleiss' kappa:** {DASH} · **Left picks:** {DASH} · **Tie rate:** {DASH} · "
                f"**Both bad:** {DASH}  \nNo judgments yet; these fill in as annotators judge pairs.  \n"
                f"_{KAPPA_SCOPE}._")
    kappa = q["fleiss_kappa"]
    kappa_text = (f"{kappa:.2f} ({kappa_words(kappa)}, {q['pairs_with_overlap']} pairs)" if is_number(kappa)
                  else f"{DASH} (no pair has two judgments yet)")
    left = q["position_bias_left_share"]
    left_text = (f"{fmt_pct(left)} of decisive judgments (50% = no position bias)" if is_number(left)
                 else f"{DASH} (no decisive judgment yet)")
    return (
        f"**Fleiss' kappa:** {kappa_text}  \n"
        f"**Left picks:** {left_text} · **Tie rate:** {fmt_pct(q['tie_rate'])} · "
        f"**Both bad:** {fmt_pct(q['both_bad_rate'])} · over {q['judgments']} judgments  \n"
        f"_{KAPPA_SCOPE}; agreement with the majority compares each annotator with the other raters "
        "of the same pairs._"
    )


def agreement_rows(q: dict[str, Any]) -> list[list[Any]]:
    return [[name, fmt_pct(rate)] for name, rate in sorted(q["agreement_with_majority"].items())]


def quality_values(q: dict[str, Any]) -> list[Any]:
    """Values for `QualitySection.outputs` from `annotation_quality(db)`."""
    rows = agreement_rows(q)
    note = "" if rows else NO_OVERLAP
    return [quality_markdown(q), gr.Dataframe(value=rows, visible=bool(rows)), note]


def build_quality_section() -> QualitySection:
    gr.Markdown("### Annotation quality")
    with gr.Row(equal_height=False):
        with gr.Column(scale=3):
            summary = gr.Markdown(elem_id="quality")
        with gr.Column(scale=2):
            agreement = gr.Dataframe(headers=AGREEMENT_COLUMNS, interactive=False, label="Per-annotator agreement",
                                     elem_id="agreement", max_height=300)
            agreement_note = gr.Markdown(elem_id="agreement-note")
    return QualitySection(summary=summary, agreement=agreement, agreement_note=agreement_note)

