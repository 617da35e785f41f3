"""Rounds on the operator tab: one table row per policy version (with the reward model's held-out
accuracy, KL to the reference and to the base, and the reward-length correlation next to length), the
pairs of each round by the method that selected them, charts of the round metrics across versions,
and per-step training curves of one training job (from `training_logs`; PPO/GRPO or DPO curves).

Values come from `rlhf_core.service.dashboard.rounds_table`, `storage.pair_selection_counts` and
`storage.training_logs`. A line needs two
points, so a chart is shown once two versions (or steps) have a value; until then a sentence says why.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import gradio as gr
import pandas as pd

from labeling_app.operator.common import DASH, fmt_num, fmt_pct, is_number
from labeling_app.operator.evidence import NO_CHART, alarm_note, gao_chart
from rlhf_core.registry import POLICY_ALGORITHMS, Chart, training_kinds
from storage import Database, Job, list_jobs, pair_selection_counts, training_logs

ROUND_COLUMNS = ["version", "algo", "created", "RM acc.", "reward", "KL/token", "KL/token to base", "KL/seq.",
                 "entropy", "length", "cut off", "reward~length r", "clip frac.", "value loss", "win rate vs base",
                 "training time (RM + policy)", "proxy gain (claimed / re-scored)", "fresh RM acc.",
                 "win rate vs previous", "current?", "over-optimization"]
# (rounds_table key, chart title, y axis title, y axis d3 format); the x axis is the policy version.
VERSION_CHARTS = (("rm_heldout_accuracy", "RM held-out accuracy", "accuracy", ".0%"),
                  ("reward_mean", "mean reward", "reward", None),
                  ("kl_per_token", "KL to reference per token", "nats / token", None),
                  ("entropy", "entropy per token", "nats / token", None),
                  ("response_length", "response length", "tokens", "~f"),
                  ("human_win_rate", "human win rate vs base", "win rate", ".0%"))
# The per-step curves: the reward model's loss, then each policy algorithm's charts (the algorithm table's), as
# (phase, chart); the x axis is the step of that phase.
REWARD_CHARTS = (("reward", Chart("loss", "reward model: loss", "Bradley-Terry loss")),)


def step_charts() -> list[tuple[str, Chart]]:
    """Every (phase, chart) the training curves can show, each once (PPO and GRPO share theirs)."""
    charts, seen = list(REWARD_CHARTS), {("reward", "loss")}
    for algorithm in POLICY_ALGORITHMS.values():
        for chart in algorithm.charts:
            if (algorithm.phase, chart.key) not in seen:
                seen.add((algorithm.phase, chart.key))
                charts.append((algorithm.phase, chart))
    return charts


CHARTS_PER_ROW = 4
NOMINAL_STEPS = 25  # up to this many steps, one labelled tick per step (no "1.5" between steps)
NO_ROUNDS = ("No rounds yet: policy v0 is the base model. Once annotators have judged some pairs, start a round "
             "under Actions; its metrics and charts appear here.")
ONE_ROUND = ("One trained version so far: its figures are in the table; the charts across versions start with "
             "the second round.")
NO_TRAINING_JOBS = "No training job has run yet, so there are no per-step curves."
SELECTION_COLUMNS = ["round", "pairs", "selection", "count", "open", "judgments", "mean info score"]
KIND_LABELS = {"train": "training", "eval_vs_base": "policy vs base", "eval_vs_previous": "policy vs previous",
               "imported": "imported"}
SELECTION_NOTE = ("_Selection is `sampling.pair_selection`: all pairs of a prompt's samples, a random subset, or "
                  "the ones the reward models disagree on most (uncertainty; served first, highest info score "
                  "first). Evaluation pairs say eval._")
NO_PAIRS = "No pairs sampled yet."


@dataclass
class RoundsSection:
    table: gr.Dataframe
    note: gr.Markdown
    version_plots: list[gr.LinePlot]
    evidence_chart: gr.HTML
    job: gr.Dropdown
    step_plots: list[gr.LinePlot]
    step_note: gr.Markdown

    selection: gr.Dataframe
    selection_note: gr.Markdown

    @property
    def outputs(self) -> list[gr.components.Component]:
        return [self.table, self.note, *self.version_plots, self.evidence_chart, *self.curve_outputs,
                *self.selection_outputs]

    @property
    def selection_outputs(self) -> list[gr.components.Component]:
        return [self.selection, self.selection_note]

    @property
    def curve_outputs(self) -> list[gr.components.Component]:
        return [self.job, *self.step_plots, self.step_note]


def _win_rate(row: dict[str, Any]) -> str:
    rate = row.get("human_win_rate")
    if not is_number(rate):
        return DASH
    n = row.get("win_rate_judgments")
    return f"{fmt_pct(rate)} (n={n})" if n else fmt_pct(rate)


def _gains(row: dict[str, Any]) -> str:
    """The proxy gain over the base in base standard deviations, as claimed and as the next reward model re-scored
    it, e.g. "+1.20 / +0.40"."""
    claimed, rescored = row.get("claimed_gain"), row.get("rescored_gain")
    if not is_number(claimed):
        return DASH
    return f"{claimed:+.2f} / " + (f"{rescored:+.2f}" if is_number(rescored) else DASH)


def _share_with_interval(value: Any, interval: Any, n: Any) -> str:  # noqa: ANN401
    if not is_number(value):
        return DASH
    around = f" [{fmt_pct(interval[0])}, {fmt_pct(interval[1])}]" if interval else ""
    return f"{fmt_pct(value)}{around} (n={n})"


def _evidence_cells(row: dict[str, Any]) -> list[str]:
    fresh = row.get("fresh") or {}
    return [_gains(row), _share_with_interval(fresh.get("accuracy"), fresh.get("interval"), fresh.get("n")),
            _share_with_interval(row.get("win_rate_vs_previous"), row.get("win_vs_previous_interval"),
                                 row.get("win_vs_previous_judgments")),
            row.get("current_note") or DASH, row.get("overoptimization") or DASH]


def _training_time(row: dict[str, Any]) -> str:
    """A round's reward-model and policy training time, e.g. "1:46 + 2:14" (rounds run as one job)."""
    parts = [row.get("reward_seconds"), row.get("policy_seconds")]
    if not all(is_number(p) for p in parts):
        return DASH
    return " + ".join(f"{int(p) // 60}:{int(p) % 60:02d}" for p in parts)


def round_rows(rounds: list[dict[str, Any]]) -> list[list[Any]]:
    """Table rows, newest version first; missing metrics read "—"."""
    rows = []
    for r in reversed(rounds):
        version = f"v{r['version']}" + (" (base)" if r["version"] == 0 else "")
        rows.append([version, r["algorithm"] or DASH, r["created"], fmt_pct(r["rm_heldout_accuracy"]),
                     fmt_num(r["reward_mean"]), fmt_num(r["kl_per_token"]), fmt_num(r["kl_base_per_token"]),
                     fmt_num(r["kl_per_sequence"]), fmt_num(r["entropy"]), fmt_num(r["response_length"]),
                     fmt_pct(r.get("cut_off_share")), fmt_num(r["reward_length_corr"], 2),
                     fmt_num(r["clip_fraction"]), fmt_num(r["value_loss"]), _win_rate(r), _training_time(r),
                     *_evidence_cells(r)])
    return rows


def version_frame(rounds: list[dict[str, Any]], key: str, title: str) -> pd.DataFrame:
    points = [(f"v{r['version']}", float(r[key])) for r in rounds if is_number(r.get(key))]
    return pd.DataFrame(points, columns=["policy version", title])


def _line(frame: pd.DataFrame) -> gr.LinePlot:
    # A text x axis ("v1", "v2"; few steps) gets one tick per point; `sort` keeps their order, not alphabetical.
    text_x = len(frame) > 0 and isinstance(frame.iloc[0, 0], str)
    return gr.LinePlot(value=frame, visible=len(frame) >= 2, sort=list(frame.iloc[:, 0]) if text_x else None)


def rounds_values(rounds: list[dict[str, Any]], gate_note: str | None = None) -> list[Any]:
    """Values for the table, note and version charts (`RoundsSection.outputs` minus the curves); `gate_note`
    (`rlhf_core.service.dashboard.policy_gate_note`) leads the note when the last round kept the policy."""
    frames = [version_frame(rounds, key, title) for key, title, _, _ in VERSION_CHARTS]
    trained = sum(r["version"] > 0 for r in rounds)
    if trained == 0:
        note = NO_ROUNDS
    elif trained == 1:
        note = ONE_ROUND
    else:
        waiting = [spec[1] for spec, frame in zip(VERSION_CHARTS, frames, strict=True) if len(frame) < 2]
        note = ("Not charted yet, because fewer than two versions have a value (numbers are in the table): "
                + ", ".join(waiting) + "." if waiting else "")
        if "human win rate vs base" in waiting:
            note += " The human win rate needs evaluation batches (Actions) judged by annotators."
    for lead in (gate_note, alarm_note(rounds)):
        if lead:
            note = f"**{lead}**" + (f"  \n{note}" if note else "")
    chart = gao_chart(rounds)
    return [round_rows(rounds), note, *(_line(frame) for frame in frames),
            gr.HTML(value=chart or f"<p>{NO_CHART}</p>")]


def selection_rows(counts: list[dict[str, Any]]) -> list[list[Any]]:
    """Rows of the pairs-by-selection table from `pair_selection_counts` (newest round first)."""
    return [[r["round"], KIND_LABELS.get(r["kind"], r["kind"]), r["selection"], r["pairs"], r["open"], r["judgments"],
             fmt_num(r["mean_info_score"]) if r["selection"] == "uncertainty" else DASH]
            for r in counts]


def selection_values(db: Database) -> list[Any]:
    """Values for `RoundsSection.selection_outputs`."""
    rows = selection_rows(pair_selection_counts(db))
    return [gr.Dataframe(value=rows, visible=bool(rows)), SELECTION_NOTE if rows else NO_PAIRS]


def training_jobs(db: Database) -> list[Job]:
    """Recent jobs that train (and so log per-step metrics), newest first."""
    kinds = training_kinds()  # the job table's training kinds
    return [j for j in list_jobs(db, limit=50) if j.kind in kinds and j.status != "queued"]


def job_algo(job: Job) -> str | None:
    return json.loads(job.params_json or "{}").get("algo")


def job_label(job: Job) -> str:
    algo = job_algo(job)
    return f"#{job.id} {job.kind}" + (f" ({algo})" if algo else "") + f" · {job.status}"


def chart_expected(phase: str, key: str, logs: list[dict[str, Any]], algo: str | None) -> bool:
    """Whether a job should have a curve for (phase, key): its rows of that phase carry the key, or, before
    that phase has logged anything, the chart is one of the job's algorithm's (the algorithm table's)."""
    rows = [r for r in logs if r["phase"] == phase]
    if rows:
        return any(key in r for r in rows)
    spec = POLICY_ALGORITHMS.get(algo) if algo else None
    # An algorithm outside rounds (SFT) logs its own phase only; its phase is logged by it (or a round's first stage).
    if (spec is not None and not spec.in_rounds) or phase not in ("policy", "reward"):
        return spec is not None and phase == spec.phase and any(c.key == key for c in spec.charts)
    if phase != "policy" or spec is None:
        return True
    return any(c.key == key for c in spec.charts)


def step_frame(logs: list[dict[str, Any]], phase: str, key: str, title: str) -> pd.DataFrame:
    # Policy-algorithm steps are logged from 0, reward-model steps from 1; show all counting from 1.
    offset = 0 if phase == "reward" else 1
    points = [(int(r["step"]) + offset, float(r[key])) for r in logs if r["phase"] == phase and is_number(r.get(key))]
    if len(points) <= NOMINAL_STEPS:
        points = [(str(step), value) for step, value in points]
    return pd.DataFrame(points, columns=["step", title])


def curve_values(db: Database, selected: int | None) -> list[Any]:
    """Values for `RoundsSection.curve_outputs`: the job choice (kept when still listed, else the newest)
    and its per-step charts."""
    jobs = training_jobs(db)
    choices = [(job_label(j), j.id) for j in jobs]
    ids = [j.id for j in jobs]
    job_id = selected if selected in ids else (ids[0] if ids else None)
    dropdown = gr.Dropdown(choices=choices, value=job_id, visible=bool(jobs))
    if job_id is None:
        return [dropdown, *(gr.LinePlot(visible=False) for _ in step_charts()), NO_TRAINING_JOBS]
    logs = training_logs(db, job_id=job_id)
    algo = job_algo(next(j for j in jobs if j.id == job_id))
    charts = step_charts()
    frames = [step_frame(logs, phase, chart.key, chart.title) for phase, chart in charts]
    waiting = [chart.title for (phase, chart), frame in zip(charts, frames, strict=True)
               if len(frame) < 2 and chart_expected(phase, chart.key, logs, algo)]
    if not logs:
        note = f"Job #{job_id} has logged no training steps yet (each phase logs its steps when it finishes)."
    elif waiting:
        note = "Fewer than two steps logged for: " + ", ".join(waiting) + "."
    else:
        note = ""
    return [dropdown, *(_line(frame) for frame in frames), note]


def build_rounds_section() -> RoundsSection:
    gr.Markdown("### Rounds")
    table = gr.Dataframe(headers=ROUND_COLUMNS, interactive=False, label="Policy versions (newest first)",
                         elem_id="rounds", max_height=360)
    note = gr.Markdown(elem_id="rounds-note")
    selection = gr.Dataframe(headers=SELECTION_COLUMNS, interactive=False, label="Pairs by round and selection",
                             elem_id="pair-selection", max_height=300)
    selection_note = gr.Markdown(elem_id="pair-selection-note")
    version_plots = []
    for start in range(0, len(VERSION_CHARTS), 3):
        with gr.Row(equal_height=True):
            for key, title, y_title, y_format in VERSION_CHARTS[start:start + 3]:
                version_plots.append(gr.LinePlot(x="policy version", y=title, title=title, y_title=y_title,
                                                 y_axis_format=y_format, height=220, visible=False,
                                                 elem_id=f"chart-{key}"))
    gr.Markdown("#### Is the loop improving? Proxy gain, fresh accuracy and human win rate against √KL")
    evidence_chart = gr.HTML(elem_id="evidence-chart")
    gr.Markdown("#### Training curves")
    job = gr.Dropdown(label="Training job", choices=[], interactive=True, elem_id="curve-job", visible=False)
    step_plots = []
    charts = step_charts()
    for start in range(0, len(charts), CHARTS_PER_ROW):
        with gr.Row(equal_height=True):
            for phase, chart in charts[start:start + CHARTS_PER_ROW]:
                step_plots.append(gr.LinePlot(x="step", y=chart.title, title=chart.title, y_title=chart.y_title,
                                              y_axis_format=chart.y_format, height=200, visible=False,
                                              elem_id=f"curve-{phase}-{chart.key}"))
    step_note = gr.Markdown(elem_id="curves-note")
    return RoundsSection(table=table, note=note, version_plots=version_plots, evidence_chart=evidence_chart, job=job,
                         step_plots=step_plots,
                         step_note=step_note, selection=selection, selection_note=selection_note)
