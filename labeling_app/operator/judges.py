"""The operator console's "AI judges" panel: each judge with its figures (kappa with people and its interval,
control accuracy, left bias, CrowdBT's η, requests and tokens), a run of one judge on up to N pairs (a `judge` job:
progress under Live status), and disabling or enabling one. Adding a judge stays on the command line (`rlhf judge
add`): it names directories and environment variables of the machine. Operator-only on the server, like every event
of the console, and audited through the action service."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gradio as gr

from labeling_app.operator.common import DASH, OPERATOR_API, PRIVATE, OperatorContext, fmt_num, fmt_pct
from rlhf_core.judges.figures import judge_figures
from rlhf_core.service.actor import ActionRefused
from rlhf_core.service.judges import request_judge_run, set_judge_enabled
from storage import Database

JUDGE_COLUMNS = ["judge", "kind", "active", "judged", "kappa with people [95%]", "people's judgments shared",
                 "control accuracy", "left bias", "η (CrowdBT)", "requests", "tokens in / out"]


@dataclass
class JudgesPanel:
    panel: gr.Accordion
    table: gr.Dataframe
    judge: gr.Dropdown
    pairs: gr.Number
    run: gr.Button
    toggle: gr.Button
    result: gr.Markdown


def judge_rows(db: Database) -> list[list[Any]]:
    """One row per judge, numbers only (the judge's name is the operator's own choice)."""
    rows = []
    for name, f in judge_figures(db).items():
        kappa = DASH if f["kappa"] is None else f"{f['kappa']:.2f} [{f['kappa_ci'][0]:.2f}, {f['kappa_ci'][1]:.2f}]"
        control = fmt_pct(f["control_accuracy"]) + (f" of {f['control_judgments']}" if f["control_judgments"] else "")
        rows.append([name, f["kind"], "yes" if f["active"] else "no", f["judgments"], kappa, f["shared"], control,
                     fmt_pct(f["left_bias"]), fmt_num(f["eta"]), f["requests"],
                     f"{f['prompt_tokens']} / {f['completion_tokens']}"])
    return rows


def build_judges_panel() -> JudgesPanel:
    with gr.Accordion("AI judges", open=False, elem_id="judges") as panel:
        gr.Markdown("Judges are annotators of kind ai: `rlhf judge add NAME --kind openai|hf|reward-model ...` adds "
                    "one. Each pair is judged in both orders; CrowdBT learns each judge's reliability with everyone "
                    "else's.", elem_id="judges-intro")
        table = gr.Dataframe(headers=JUDGE_COLUMNS, interactive=False, label="Judges", elem_id="judges-table")
        with gr.Row():
            judge = gr.Dropdown(choices=[], label="Judge", elem_id="judge-name", allow_custom_value=True)
            pairs = gr.Number(value=50, precision=0, minimum=1, label="Pairs (at most)", elem_id="judge-pairs")
            run = gr.Button("Run judge", variant="primary", elem_id="btn-run-judge")
            toggle = gr.Button("Disable / enable", elem_id="btn-toggle-judge")
        result = gr.Markdown(elem_id="judge-result")
    return JudgesPanel(panel=panel, table=table, judge=judge, pairs=pairs, run=run, toggle=toggle, result=result)


def wire_judges_panel(ctx: OperatorContext, panel: JudgesPanel) -> None:
    def overview(request: gr.Request) -> tuple[list[list[Any]], gr.Dropdown]:
        with ctx.checked(request):
            rows = judge_rows(ctx.db)
        return rows, gr.Dropdown(choices=[r[0] for r in rows])

    def run(name: str, pairs: float | None, request: gr.Request) -> tuple[str, list[list[Any]]]:
        with ctx.checked(request) as user:
            try:
                job = request_judge_run(ctx.ws, ctx.db, name or "", ctx.actor(user, request),
                                        pairs=int(pairs) if pairs else None)
            except ActionRefused as exc:
                return "**Not started:** " + str(exc), judge_rows(ctx.db)
            return (f"Queued judge job **#{job.id}**: each pair is judged in both orders. Progress under Live "
                    "status.", judge_rows(ctx.db))

    def toggle(name: str, request: gr.Request) -> tuple[str, list[list[Any]]]:
        with ctx.checked(request) as user:
            active = next((row[2] == "yes" for row in judge_rows(ctx.db) if row[0] == name), None)
            try:
                set_judge_enabled(ctx.db, name or "", not active, ctx.actor(user, request))
            except ActionRefused as exc:
                return "**Not changed:** " + str(exc), judge_rows(ctx.db)
            return ("Enabled." if not active else "Disabled: its judgments stay, it takes no more runs."), \
                judge_rows(ctx.db)

    panel.panel.expand(overview, outputs=[panel.table, panel.judge], **PRIVATE)
    panel.run.click(run, inputs=[panel.judge, panel.pairs], outputs=[panel.result, panel.table], api_name="run_judge",
                    api_visibility=OPERATOR_API, queue=False)
    panel.toggle.click(toggle, inputs=[panel.judge], outputs=[panel.result, panel.table], api_name="toggle_judge",
                       api_visibility=OPERATOR_API, queue=False)
