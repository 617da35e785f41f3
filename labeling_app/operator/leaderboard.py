"""The operator tab's "Systems" panel: upload a file of pairs other systems wrote (judged like sampled pairs),
and the arena-style leaderboard of every system judged pairs name (imported systems, policy versions "v0",
"v1", ...): a table and a chart of each rating with its 95% interval. Operator-only on the server, like every
event of the tab; computed when the panel opens or on its button (`rlhf_core.data.leaderboard`)."""

from __future__ import annotations

import html
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr

from labeling_app.operator.common import OPERATOR_API, PRIVATE, OperatorContext
from labeling_app.render import plain_markdown
from rlhf_core.data.leaderboard import Leaderboard, LeaderboardError, format_leaderboard, system_leaderboard
from rlhf_core.registry import FILE_SUFFIXES
from rlhf_core.service.actor import ActionRefused
from rlhf_core.service.imports import import_file

COLUMNS = ["system", "rating", "95% interval", "win rate vs baseline", "95% interval ", "judgments", "ties"]
HELP = ("Upload pairs of responses that other systems wrote (JSONL or CSV: `prompt` or `messages`, `response_a`, "
        "`response_b`, optional `system_a`, `system_b`, `metadata`; the same as `rlhf pairs import`). They are "
        "served and judged like sampled pairs. The leaderboard fits a Bradley-Terry model over every system that "
        "judged pairs name, ties as half a win; ratings on the Elo scale with the baseline at 1000.")
NOT_IMPORTED = "**Not imported:** "


@dataclass
class SystemsPanel:
    panel: gr.Accordion
    pairs_file: gr.File
    import_pairs: gr.Button
    import_result: gr.Markdown
    baseline: gr.Textbox
    refresh: gr.Button
    table: gr.Dataframe
    chart: gr.HTML
    note: gr.Markdown


def build_systems_panel() -> SystemsPanel:
    with gr.Accordion("Systems: imported pairs and leaderboard", open=False, elem_id="systems") as panel:
        gr.Markdown(HELP)
        with gr.Row(equal_height=True):
            pairs_file = gr.File(label="Pair file", file_types=list(FILE_SUFFIXES), type="filepath",
                                 elem_id="pairs-file")
            import_pairs = gr.Button("Import pairs", elem_id="btn-import-pairs", scale=0, min_width=140)
        import_result = gr.Markdown(elem_id="pairs-result")
        with gr.Row(equal_height=True):
            baseline = gr.Textbox(label="Baseline system (empty: v0, else the most judged)", elem_id="lb-baseline",
                                  max_lines=1)
            refresh = gr.Button("Show leaderboard", elem_id="btn-leaderboard", scale=0, min_width=160)
        table = gr.Dataframe(headers=COLUMNS, interactive=False, label="Leaderboard", elem_id="leaderboard")
        chart = gr.HTML(elem_id="leaderboard-chart")
        note = gr.Markdown(elem_id="leaderboard-note")
    return SystemsPanel(panel=panel, pairs_file=pairs_file, import_pairs=import_pairs, import_result=import_result,
                        baseline=baseline, refresh=refresh, table=table, chart=chart, note=note)


def leaderboard_rows(board: Leaderboard) -> list[list[Any]]:
    return [[r.system, round(r.rating), f"{r.rating_ci[0]:.0f} to {r.rating_ci[1]:.0f}",
             f"{100 * r.win_rate_vs_baseline:.1f}%", f"{100 * r.win_rate_ci[0]:.0f}% to {100 * r.win_rate_ci[1]:.0f}%",
             r.judgments, r.ties] for r in board.systems]


def interval_chart(board: Leaderboard, width: int = 640, row: int = 28) -> str:
    """An inline SVG: per system (best on top) its rating as a dot on a bar from the interval's low to high end,
    and a dashed line at the baseline's 1000."""
    if not board.systems:
        return ""
    low = min(r.rating_ci[0] for r in board.systems)
    high = max(r.rating_ci[1] for r in board.systems)
    span = max(high - low, 1.0)
    left, right = 150, width - 20

    def x(value: float) -> float:
        return left + (value - low) / span * (right - left)

    height = row * len(board.systems) + 30
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
             f'aria-label="Ratings with 95% intervals" class="leaderboard-chart">',
             f'<line x1="{x(1000):.1f}" y1="0" x2="{x(1000):.1f}" y2="{height - 20}" stroke="#999" '
             'stroke-dasharray="4 3"/>']
    for i, r in enumerate(board.systems):
        y = row * i + row / 2
        name = html.escape(r.system[:20])
        parts.append(f'<text x="{left - 8}" y="{y + 4:.1f}" text-anchor="end" font-size="12" fill="currentColor">'
                     f'{name}</text>')
        parts.append(f'<line class="interval" x1="{x(r.rating_ci[0]):.1f}" y1="{y:.1f}" x2="{x(r.rating_ci[1]):.1f}" '
                     f'y2="{y:.1f}" stroke="#4a78c2" stroke-width="3"><title>{name}: {r.rating_ci[0]:.0f} to '
                     f'{r.rating_ci[1]:.0f}</title></line>')
        parts.append(f'<circle class="rating" cx="{x(r.rating):.1f}" cy="{y:.1f}" r="5" fill="#1f3f7a">'
                     f'<title>{name}: {r.rating:.0f}</title></circle>')
    axis = height - 8
    parts.append(f'<text x="{left}" y="{axis}" font-size="11" fill="currentColor">{low:.0f}</text>'
                 f'<text x="{right}" y="{axis}" font-size="11" text-anchor="end" fill="currentColor">{high:.0f}</text>'
                 f'<text x="{x(1000):.1f}" y="{axis}" font-size="11" text-anchor="middle" fill="currentColor">'
                 f'{html.escape(board.baseline or "")} = 1000</text></svg>')
    return "".join(parts)


def wire_systems_panel(ctx: OperatorContext, panel: SystemsPanel) -> None:
    db = ctx.db

    def show(baseline: str | None, request: gr.Request) -> tuple[list[list[Any]], str, str]:
        with ctx.checked(request):
            try:
                board = system_leaderboard(db, baseline=(baseline or "").strip() or None)
            except LeaderboardError as exc:
                return [], "", plain_markdown(str(exc))
        lines = format_leaderboard(board)
        return leaderboard_rows(board), interval_chart(board), plain_markdown(" ".join(lines[-2:] if board.systems
                                                                                        else lines))

    def import_pairs(path: str | None, request: gr.Request) -> str:
        with ctx.checked(request) as user:
            if not path:
                return NOT_IMPORTED + "choose a JSONL or CSV file first."
            name = Path(path).name
            try:
                done = import_file(ctx.ws, db, "pairs", path, ctx.actor(user, request), source=name, shown_name=name)
            except ActionRefused as exc:
                return NOT_IMPORTED + plain_markdown(str(exc))
        return plain_markdown(done.summary)

    panel.panel.expand(show, inputs=[panel.baseline], outputs=[panel.table, panel.chart, panel.note], **PRIVATE)
    panel.refresh.click(show, inputs=[panel.baseline], outputs=[panel.table, panel.chart, panel.note],
                        api_name="leaderboard", api_visibility=OPERATOR_API, concurrency_limit=1)
    panel.import_pairs.click(import_pairs, inputs=[panel.pairs_file], outputs=[panel.import_result],
                             api_name="import_pairs", api_visibility=OPERATOR_API, concurrency_limit=1)
