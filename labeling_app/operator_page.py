"""The operator's tab: pool status, "sample N more pairs", and the user list.

Every event here checks the operator role on the server, so an annotator calling these endpoints
through the API (`gradio_client` or raw HTTP) gets an error, not data. The lead extends this tab
with rounds and metrics.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gradio as gr

from labeling_app.auth import require_user
from labeling_app.gate import DbGate
from labeling_app.render import plain_markdown
from labeling_app.services import AppServices
from rlhf_core.workspace import Workspace
from storage import Database, list_annotators, status_counts

USER_COLUMNS = ["username", "role", "active", "judgments", "created (UTC)"]
MAX_PAIRS_PER_REQUEST = 10_000


@dataclass
class OperatorTab:
    tab: gr.Tab
    status: gr.Markdown
    users: gr.Dataframe


def pool_status_markdown(counts: dict[str, Any]) -> str:
    c, jobs, versions = counts["counts"], counts["jobs"], counts["versions"]
    reward = versions["reward_model"] if versions["reward_model"] is not None else "none yet"
    return (
        f"**Pairs open:** {c['pairs_open']} of {c['pairs']} · **Judgments:** {c['judgments']} · "
        f"**Prompts:** {c['prompts']} · **Samples:** {c['samples']}  \n"
        f"**Policy version:** {versions['policy']} · **Reward model:** {reward} · "
        f"**Jobs:** {len(jobs['running'])} running, {jobs['queued']} queued"
    )


def user_rows(db: Database, per_annotator: dict[str, int]) -> list[list[Any]]:
    return [
        [u.username, u.role, "yes" if u.active else "no", per_annotator.get(u.username, 0),
         u.created_at.strftime("%Y-%m-%d %H:%M")]
        for u in list_annotators(db)
    ]


def build_operator_tab(ws: Workspace, db: Database, services: AppServices, gate: DbGate) -> OperatorTab:
    with gr.Tab("Operator", id="operator", visible=False) as tab:
        status = gr.Markdown(elem_id="pool-status")
        with gr.Row():
            n_pairs = gr.Number(value=ws.config.sampling.pool_refill_pairs, precision=0, minimum=1,
                                maximum=MAX_PAIRS_PER_REQUEST, label="Pairs to sample", scale=1)
            sample = gr.Button("Sample N more pairs", elem_id="btn-sample", scale=1)
            refresh = gr.Button("Refresh", elem_id="btn-refresh", scale=1)
        sample_result = gr.Markdown(elem_id="sample-result")
        users = gr.Dataframe(headers=USER_COLUMNS, interactive=False, label="Users", elem_id="users")

    def overview(request: gr.Request) -> tuple[str, list[list[Any]]]:
        with gate:
            require_user(db, request, role="operator")
            counts = status_counts(db)
            return pool_status_markdown(counts), user_rows(db, counts["judgments_per_annotator"])

    def request_pairs(n: float | None, request: gr.Request) -> tuple[str, str]:
        with gate:
            require_user(db, request, role="operator")
        if services.request_pairs is None:
            with gate:
                status = pool_status_markdown(status_counts(db))
            return ("No sampler is attached to this server (it runs without a model). "
                    "Run `rlhf sample --pairs N` instead.", status)
        count = int(n or 0)
        if not 1 <= count <= MAX_PAIRS_PER_REQUEST:
            raise gr.Error(f"Ask for between 1 and {MAX_PAIRS_PER_REQUEST} pairs.", print_exception=False)
        result = services.request_pairs(count)  # outside the gate: it may write jobs or pairs itself
        done = f"Requested {count} more pairs." + (f" {plain_markdown(str(result))}" if result is not None else "")
        with gate:
            status = pool_status_markdown(status_counts(db))
        return done, status

    tab.select(overview, outputs=[status, users], api_name="operator_overview")
    refresh.click(overview, outputs=[status, users], api_name="operator_refresh", show_progress="minimal")
    sample.click(request_pairs, inputs=[n_pairs], outputs=[sample_result, status], api_name="sample_pairs")
    return OperatorTab(tab=tab, status=status, users=users)
