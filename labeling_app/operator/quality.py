"""Annotation quality on the operator tab: Fleiss' kappa, position bias, tie and both-bad rates, and a
table of each annotator's accuracy on control pairs and agreement with the majority, each with its
count and 95% Wilson interval, beside the current reward model's CrowdBT estimates of their reliability η
and left-side bias. Values come from `rlhf_core.service.dashboard.annotation_quality`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gradio as gr

from labeling_app.operator.common import DASH, fmt_pct, is_number

KAPPA_SCOPE = "Fleiss' kappa over a/b/tie/both_bad on pairs with ≥ 2 judgments"
AGREEMENT_COLUMNS = ["annotator", "control pairs", "control accuracy (95% CI)", "overlap pairs",
                     "agreement with majority (95% CI)", "η (CrowdBT)", "left bias", "reward model"]
ETA_NOTE = ("η: the reward model's estimate (CrowdBT, v{version}) of how often an annotator's label follows the "
            "preference when they do not pick by position (1 always, 0.5 a coin, below 0.5 the opposite: their "
            "labels are turned around); left bias: how often they pick the side shown on the left regardless.")
NO_FIGURES = ("No annotator has a quality figure yet. Import control pairs (Actions) to measure accuracy "
              "against known answers, and set `labeling.judgments_per_pair = 2` (or more) in rlhf.toml to "
              "measure agreement between people.")
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


def rate_with_interval(rate: Any, interval: list[float] | None) -> str:
    """A share with its 95% interval, as "80% (49%–94%)"; "—" when undefined."""
    if not is_number(rate):
        return DASH
    return f"{fmt_pct(rate)} ({fmt_pct(interval[0])}–{fmt_pct(interval[1])})" if interval else fmt_pct(rate)


def training_use(figures: dict[str, Any], min_accuracy: float) -> str:
    """Whether reward-model training keeps this annotator's judgments (`reward.min_annotator_accuracy`), and
    with CrowdBT the mean weight it gave them (1 = a trusted new annotator's)."""
    accuracy = figures["control_accuracy"]
    if min_accuracy > 0 and is_number(accuracy) and accuracy < min_accuracy:
        return f"left out (below {fmt_pct(min_accuracy)})"
    weight = figures.get("training_weight")
    if is_number(weight):
        return f"weight {weight:.2f}" if weight > 0 else "left out (no signal)"
    return "used"


def eta_text(figures: dict[str, Any]) -> str:
    eta = figures.get("eta")
    return f"{eta:.2f}" if is_number(eta) else DASH


def agreement_rows(q: dict[str, Any], min_accuracy: float = 0.0) -> list[list[Any]]:
    return [[name, f["control_judgments"], rate_with_interval(f["control_accuracy"], f["control_ci"]),
             f["majority_items"], rate_with_interval(f["majority_agreement"], f["majority_ci"]),
             eta_text(f), fmt_pct(f.get("left_bias")),
             training_use(f, min_accuracy)]
            for name, f in sorted(q["annotators"].items())]


def quality_values(q: dict[str, Any], min_accuracy: float = 0.0) -> list[Any]:
    """Values for `QualitySection.outputs` from `annotation_quality(db)`; `min_accuracy` is the
    workspace's `reward.min_annotator_accuracy` (0 = off)."""
    rows = agreement_rows(q, min_accuracy)
    measured = any(r[1] or r[3] or r[5] != DASH for r in rows)
    controls = (f"{q['control_pairs']} control pairs imported" if q["control_pairs"]
                else "no control pairs imported yet")
    note = (f"_{controls}; accuracy counts judgments of control pairs, agreement counts pairs where the "
            "other raters have a majority._" if measured else NO_FIGURES)
    versions = {f["eta_reward_model"] for f in q["annotators"].values() if f.get("eta_reward_model")}
    if versions:
        note += "  \n_" + ETA_NOTE.format(version=max(versions)) + "_"
    return [quality_markdown(q), gr.Dataframe(value=rows, visible=bool(rows)), note]


def build_quality_section() -> QualitySection:
    gr.Markdown("### Annotation quality")
    summary = gr.Markdown(elem_id="quality")
    agreement = gr.Dataframe(headers=AGREEMENT_COLUMNS, interactive=False, label="Per-annotator quality",
                             elem_id="annotator-quality", max_height=300)
    agreement_note = gr.Markdown(elem_id="annotator-quality-note")
    return QualitySection(summary=summary, agreement=agreement, agreement_note=agreement_note)
