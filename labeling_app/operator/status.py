"""Live status on the operator tab: pool counts, versions, the running job with its progress, recent
jobs, and judgments per annotator and per day. Values come from `rlhf_core.service.dashboard.live_status`."""

from __future__ import annotations

import html
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import gradio as gr
import pandas as pd

from labeling_app.operator.common import fmt_pct

JOB_COLUMNS = ["job", "kind", "status", "progress", "attempt", "message", "created (UTC)"]
ANNOTATOR_COLUMNS = ["annotator", "judgments", "today (UTC)"]
PER_DAY_COLUMNS = ["day", "annotator", "judgments"]
CHART_DAYS = 30
NO_JUDGMENTS = "No judgments yet: the chart fills in as annotators judge pairs."
NO_WORKER_HINT = ("a worker takes it (<code>rlhf serve</code> starts one unless <code>--no-worker</code>; "
                  "otherwise run <code>rlhf worker</code>)")


@dataclass
class StatusSection:
    summary: gr.Markdown
    running: gr.HTML
    per_day: gr.BarPlot
    per_day_note: gr.Markdown
    per_annotator: gr.Dataframe
    jobs: gr.Dataframe

    @property
    def outputs(self) -> list[gr.components.Component]:
        return [self.summary, self.running, self.per_day, self.per_day_note, self.per_annotator, self.jobs]


def pool_status_markdown(counts: dict[str, Any]) -> str:
    """One-paragraph summary from `status_counts` (or `live_status`, which extends it)."""
    c, jobs, versions = counts["counts"], counts["jobs"], counts["versions"]
    reward = f"v{versions['reward_model']}" if versions["reward_model"] is not None else "none yet"
    policy = f"v{versions['policy']}" + (" (base model)" if versions["policy"] == 0 else "")
    return (
        f"**Pairs open:** {c['pairs_open']} of {c['pairs']} · **Judgments:** {c['judgments']} · "
        f"**Prompts:** {c['prompts']} · **Samples:** {c['samples']}  \n"
        f"**Policy version:** {policy} · **Reward model:** {reward} · "
        f"**Jobs:** {len(jobs['running'])} running, {jobs['queued']} queued"
    )


def _bar(fraction: float) -> str:
    width = max(0.0, min(1.0, fraction)) * 100
    return ('<div style="background:var(--neutral-200);border-radius:4px;height:10px;margin-top:4px">'
            f'<div style="width:{width:.1f}%;background:var(--color-accent);height:10px;border-radius:4px">'
            "</div></div>")


def running_job_html(counts: dict[str, Any]) -> str:
    """The running job(s) with a progress bar and message; a sentence when none runs. All text escaped."""
    running, queued = counts["jobs"]["running"], counts["jobs"]["queued"]
    if not running:
        text = "No job running."
        if not counts.get("recent_jobs", True):
            text += " No jobs yet: start a round under Actions below."
        if queued:
            text += f" {queued} queued: {NO_WORKER_HINT}."
        return f'<div id="running-job"><p>{text}</p></div>'
    parts = []
    for job in running:
        message = html.escape((job.get("message") or "").splitlines()[0][:160] if job.get("message") else "")
        parts.append(f'<div class="job-progress"><b>Job #{job["id"]} · {html.escape(job["kind"])}</b> · '
                     f'<span class="job-percent">{fmt_pct(job["progress"])}</span> · {message}'
                     f'{_bar(job["progress"] or 0.0)}</div>')
    return '<div id="running-job">' + "".join(parts) + "</div>"


def per_day_frame(per_day: list[dict[str, Any]], today: datetime | None = None) -> pd.DataFrame:
    """Judgments per UTC day and annotator for the last `CHART_DAYS` days (long format for the chart)."""
    today = today or datetime.now(timezone.utc)
    first = (today - timedelta(days=CHART_DAYS - 1)).strftime("%Y-%m-%d")
    rows = [[r["day"], r["annotator"], r["judgments"]] for r in per_day if r["day"] >= first]
    return pd.DataFrame(rows, columns=PER_DAY_COLUMNS)


def annotator_rows(info: dict[str, Any], today: datetime | None = None) -> list[list[Any]]:
    day = (today or datetime.now(timezone.utc)).strftime("%Y-%m-%d")
    todays = {r["annotator"]: r["judgments"] for r in info["judgments_per_day"] if r["day"] == day}
    return [[name, n, todays.get(name, 0)] for name, n in sorted(info["judgments_per_annotator"].items())]


def job_rows(recent_jobs: list[dict[str, Any]]) -> list[list[Any]]:
    return [[f"#{j['id']}", j["kind"], j["status"], fmt_pct(j["progress"]), j.get("attempt", ""), j["message"],
             j["created"]] for j in recent_jobs]


def status_values(info: dict[str, Any]) -> list[Any]:
    """Values for `StatusSection.outputs` from `live_status(db)`."""
    frame = per_day_frame(info["judgments_per_day"])
    return [
        pool_status_markdown(info),
        running_job_html(info),
        gr.BarPlot(value=frame, visible=not frame.empty),
        "" if not frame.empty else NO_JUDGMENTS,
        gr.Dataframe(value=annotator_rows(info), visible=bool(info["judgments_per_annotator"])),
        job_rows(info["recent_jobs"]),
    ]


def build_status_section() -> StatusSection:
    """Lay out the live-status block inside the current Blocks context."""
    gr.Markdown("### Live status")
    summary = gr.Markdown(elem_id="pool-status")
    running = gr.HTML(elem_id="running-job-box", js_on_load=None)
    with gr.Row(equal_height=False):
        with gr.Column(scale=3):
            per_day = gr.BarPlot(x="day", y="judgments", color="annotator", label="Judgments per day (UTC)",
                                 x_title="day (UTC)", y_title="judgments", color_title="annotator",
                                 elem_id="judgments-per-day", visible=False)  # until it has a bar
            per_day_note = gr.Markdown(elem_id="judgments-per-day-note")
        with gr.Column(scale=2):
            per_annotator = gr.Dataframe(headers=ANNOTATOR_COLUMNS, interactive=False, label="Judgments per annotator",
                                         elem_id="judgments-per-annotator", max_height=300)
    jobs = gr.Dataframe(headers=JOB_COLUMNS, interactive=False, label="Recent jobs (newest first)", elem_id="jobs",
                        max_height=360, wrap=True)
    return StatusSection(summary=summary, running=running, per_day=per_day, per_day_note=per_day_note,
                         per_annotator=per_annotator, jobs=jobs)
