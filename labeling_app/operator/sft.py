"""The operator tab's "Supervised fine-tuning (stage 1)" panel: how many demonstrations there are (written on the
page, edits among them, imported), the newest SFT version's held-out NLL, and "Start SFT", which queues a
`train_sft` job (its progress shows under Live status, its curves under Training curves). Operator-only on the
server, like every event of the tab, and audited."""

from __future__ import annotations

import json
from dataclasses import dataclass

import gradio as gr

from labeling_app.operator.common import OPERATOR_API, PRIVATE, OperatorContext, fmt_num
from rlhf_core.loop.job_rules import NO_DEMONSTRATIONS as NONE_YET
from rlhf_core.service.actor import ActionRefused
from rlhf_core.service.jobs import start_sft
from rlhf_core.training.sft import latest_sft_version
from storage import Database, demonstration_counts


@dataclass
class SFTPanel:
    panel: gr.Accordion
    summary: gr.Markdown
    start: gr.Button
    result: gr.Markdown


def sft_summary(db: Database, mode: str) -> str:
    """One paragraph: the demonstrations by origin and the newest SFT version's figures (numbers only)."""
    counts = demonstration_counts(db)
    page = f"The labeling page's panel is `{mode}` (labeling.demonstrations)."
    if counts["demonstrations"] == 0:
        return f"{NONE_YET} {page}"
    text = (f"**{counts['demonstrations']} demonstrations**: {counts['written']} written on the labeling page "
            f"({counts['edits']} of them edits of a response, each also a preference for the edit), "
            f"{counts['imported']} imported. {page}")
    version = latest_sft_version(db)
    if version is None:
        return text + " No SFT version yet."
    m = json.loads(version.metrics_json)
    return (text + f" Newest SFT version: **v{version.id}**, held-out NLL per answer token "
            f"{fmt_num(m.get('heldout_nll_before'))} before, {fmt_num(m.get('heldout_nll'))} after "
            f"(epoch {m.get('best_epoch', '—')} kept).")


def build_sft_panel() -> SFTPanel:
    with gr.Accordion("Supervised fine-tuning (stage 1)", open=False, elem_id="sft") as panel:
        summary = gr.Markdown(elem_id="sft-summary")
        start = gr.Button("Start SFT", variant="primary", elem_id="btn-start-sft")
        result = gr.Markdown(elem_id="sft-result")
    return SFTPanel(panel=panel, summary=summary, start=start, result=result)


def wire_sft_panel(ctx: OperatorContext, panel: SFTPanel) -> None:
    mode = ctx.ws.config.labeling.demonstrations

    def sft_overview(request: gr.Request) -> str:
        with ctx.checked(request):
            return sft_summary(ctx.db, mode)

    def start(request: gr.Request) -> tuple[str, str]:
        with ctx.checked(request) as user:
            try:
                job = start_sft(ctx.ws, ctx.db, ctx.actor(user, request))
            except ActionRefused as exc:
                return "**Not started:** " + str(exc), sft_summary(ctx.db, mode)
            return (f"Queued SFT job **#{job.id}**: it fine-tunes the current policy on every demonstration and "
                    "makes the next policy version. Progress under Live status.", sft_summary(ctx.db, mode))

    panel.panel.expand(sft_overview, outputs=[panel.summary], **PRIVATE)
    panel.start.click(start, outputs=[panel.result, panel.summary], api_name="start_sft",
                      api_visibility=OPERATOR_API, queue=False)
