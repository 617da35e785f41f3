"""The operator console, a Gradio app of its own (served at `/operator/`): live status, actions (rounds,
evaluation batches, sampling, export), "Try it" (two versions' answers to a typed prompt), supervised
fine-tuning on demonstrations (stage 1), systems (imported pairs and the leaderboard), annotation quality,
rounds with their charts and training curves, the user list and the audit log.

Every event here checks the operator role on the server (`OperatorContext.checked`), including the
timer's refresh and events only the page fires, so an annotator calling them through the API
(`gradio_client`, or a raw POST naming the event) gets an error, not data. An annotator who opens the
page sees one sentence saying so: the console stays hidden and none of its events fire. For an operator,
the page fills itself once the role is confirmed, and a timer refreshes what changed every few seconds
while the page is open.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gradio as gr

from labeling_app.auth import SessionStore, require_user
from labeling_app.gate import DbGate
from labeling_app.operator.accounts import build_accounts_section, refresh_choices
from labeling_app.operator.best_of_n import build_best_of_n, wire_best_of_n
from labeling_app.operator.common import OPERATOR_API, PRIVATE, OperatorContext
from labeling_app.operator.controls import ActionControls, build_action_controls, wire_action_controls
from labeling_app.operator.dashboard import Dashboard
from labeling_app.operator.evidence import build_rollback_panel, wire_rollback_panel
from labeling_app.operator.judges import build_judges_panel, wire_judges_panel
from labeling_app.operator.leaderboard import build_systems_panel, wire_systems_panel
from labeling_app.operator.quality import build_quality_section
from labeling_app.operator.rewards import build_rewards_panel, wire_rewards_panel
from labeling_app.operator.rounds import build_rounds_section, curve_values
from labeling_app.operator.sft import build_sft_panel, wire_sft_panel
from labeling_app.operator.status import build_status_section, pool_status_markdown
from labeling_app.operator.try_it import build_try_it, wire_try_it
from labeling_app.render import plain_markdown
from labeling_app.services import AppServices
from rlhf_core.workspace import Workspace
from storage import Database, audit_events, list_annotators, status_counts

USER_COLUMNS = ["username", "role", "active", "judgments", "created (UTC)"]
AUDIT_COLUMNS = ["time (UTC)", "who", "action", "address", "parameters"]
AUDIT_ROWS_SHOWN = 50
REFRESH_SECONDS = 3.0
CONSOLE_TITLE = "rlhf-loop · operator console"
LABELING_LINK = "/"  # where the server mounts the labeling page
CONSOLE_CSS = "#console-head p { margin: 0; }\n"

__all__ = ["CONSOLE_CSS", "CONSOLE_TITLE", "OperatorConsole", "build_operator_console", "pool_status_markdown",
           "user_rows"]


@dataclass
class OperatorConsole:
    blocks: gr.Blocks
    body: gr.Column  # shown to operators only
    opened: gr.Textbox  # set once the page's user is confirmed an operator: the data events follow it
    status: gr.Markdown
    users: gr.Dataframe
    dashboard: Dashboard
    controls: ActionControls
    timer: gr.Timer
    audit: gr.Dataframe


def audit_rows(db: Database, limit: int = AUDIT_ROWS_SHOWN) -> list[list[Any]]:
    """The latest audit events, newest first, as table rows."""
    return [[r.created_at.strftime("%Y-%m-%d %H:%M:%S"), r.actor, r.action, r.address,
             json.dumps(r.params, sort_keys=True)] for r in audit_events(db, limit=limit)]


def user_rows(db: Database, per_annotator: dict[str, int]) -> list[list[Any]]:
    return [
        [u.username, u.role, "yes" if u.active else "no", per_annotator.get(u.username, 0),
         u.created_at.strftime("%Y-%m-%d %H:%M")]
        for u in list_annotators(db)
    ]


def refusal(username: str, role: str) -> str:
    """What the console says to a signed-in user who is no operator (the page shows nothing else)."""
    return (f"The operator console is for operators. You are signed in as **{plain_markdown(username)}** ({role}); "
            "the **Labeling page** button above takes you back.")


def build_operator_console(ws: Workspace, db: Database, services: AppServices,
                           sessions: SessionStore | None = None) -> gr.Blocks:
    """The console's Blocks. Needs login and the session store installed when served (see `server.serve`);
    `sessions` is not read here (each event re-reads the user from the database) but kept for symmetry."""
    ctx = OperatorContext(ws=ws, db=db, services=services, gate=DbGate(db))
    with gr.Blocks(title=CONSOLE_TITLE, analytics_enabled=False) as blocks:
        with gr.Row(equal_height=True, elem_id="console-head"):
            gr.Markdown("## Operator console", elem_id="title")
            whoami = gr.Markdown(elem_id="whoami")
            gr.Button("Labeling page", link=LABELING_LINK, size="sm", variant="secondary", scale=0, min_width=130,
                      elem_id="link-labeling")
            gr.Button("Log out", link="/logout", size="sm", variant="secondary", scale=0, min_width=90)
        refused = gr.Markdown(elem_id="operator-refusal")
        with gr.Column(visible=False, elem_id="operator") as body:
            with gr.Row(equal_height=True):
                gr.Markdown(f"Live figures refresh every {REFRESH_SECONDS:.0f} s while this page is open.",
                            elem_id="operator-intro")
                refresh = gr.Button("Refresh", elem_id="btn-refresh", scale=0, min_width=100, size="sm")
            status = build_status_section()
            controls = build_action_controls(ctx)
            try_it = build_try_it(ctx)
            best_of_n = build_best_of_n(ctx)
            sft = build_sft_panel()
            rewards = build_rewards_panel()
            judges = build_judges_panel()
            systems = build_systems_panel()
            quality = build_quality_section()
            rounds = build_rounds_section()
            rollback = build_rollback_panel()
            gr.Markdown("### Users")
            users = gr.Dataframe(headers=USER_COLUMNS, interactive=False, label="Users", elem_id="users")
            accounts = build_accounts_section(ctx, users,
                                              lambda: user_rows(db, status_counts(db)["judgments_per_annotator"]))
            gr.Markdown("### Audit log (latest first; `rlhf audit` lists all)")
            audit = gr.Dataframe(headers=AUDIT_COLUMNS, interactive=False, label="Audit log", elem_id="audit")
        opened = gr.Textbox(visible=False, elem_id="operator-opened")
        memo = gr.State(None)
        timer = gr.Timer(REFRESH_SECONDS, active=False)
        console = OperatorConsole(blocks=blocks, body=body, opened=opened, status=status.summary, users=users,
                                  audit=audit, controls=controls, timer=timer,
                                  dashboard=Dashboard(status=status, quality=quality, rounds=rounds,
                                                      min_accuracy=ws.config.reward.min_annotator_accuracy))

        def page_head(request: gr.Request) -> list[Any]:
            """Once per page load: the console for an operator (whose name then starts the data events),
            one sentence for anyone else."""
            with ctx.gate:
                user = require_user(db, request)
            signed_in = f"Signed in as **{plain_markdown(user.username)}** ({user.role})"
            if user.role != "operator":
                return [signed_in, refusal(user.username, user.role), gr.Column(visible=False), gr.skip()]
            return [signed_in, "", gr.Column(visible=True), user.username]

        blocks.load(page_head, outputs=[whoami, refused, body, opened], api_visibility="private", queue=False,
                    show_progress="hidden")
        _wire(ctx, console, refresh, memo)
        refresh_choices(ctx, accounts, opened.change, refresh.click)
        for change in accounts.events:  # an account change shows in the audit log at once
            change.success(_audit_refresher(ctx), outputs=[audit], **PRIVATE)
        wire_try_it(ctx, try_it)
        wire_best_of_n(ctx, best_of_n)
        wire_sft_panel(ctx, sft)
        wire_rewards_panel(ctx, rewards)
        wire_judges_panel(ctx, judges)
        wire_systems_panel(ctx, systems)
        rolled = wire_rollback_panel(ctx, rollback, opened.change, refresh.click)
        rolled.success(_audit_refresher(ctx), outputs=[audit], **PRIVATE)
    return blocks


def _wire(ctx: OperatorContext, page: OperatorConsole, refresh: gr.Button, memo: gr.State) -> None:
    db, dashboard = ctx.db, page.dashboard
    everything = [*dashboard.outputs, memo]

    def overview(request: gr.Request) -> tuple[str, list[list[Any]]]:
        with ctx.checked(request):
            counts = status_counts(db)
            return pool_status_markdown(counts), user_rows(db, counts["judgments_per_annotator"])

    def refresh_dashboard(job_id: int | None, request: gr.Request) -> list[Any]:
        with ctx.checked(request):
            values, new_memo = dashboard.values(db, job_id)
        return [*values, new_memo]

    def open_console(job_id: int | None, request: gr.Request) -> list[Any]:
        return [*refresh_dashboard(job_id, request), gr.Timer(active=True)]

    def tick(job_id: int | None, last: dict[str, Any] | None, request: gr.Request) -> list[Any]:
        with ctx.checked(request):
            values, new_memo = dashboard.values(db, job_id, last)
        return [*values, new_memo]

    def show_curves(job_id: int | None, request: gr.Request) -> list[Any]:
        with ctx.checked(request):
            return curve_values(db, job_id)

    def latest_audit(request: gr.Request) -> list[list[Any]]:
        with ctx.checked(request):
            return audit_rows(db)

    # The two public events keep their shape (pool status + users) for API clients; the dashboard
    # events beside them fill in the rest. `opened` changes once per page load, for operators only.
    page.opened.change(overview, outputs=[page.status, page.users], api_name="operator_overview")
    page.opened.change(open_console, inputs=[dashboard.rounds.job], outputs=[*everything, page.timer], **PRIVATE)
    refresh.click(overview, outputs=[page.status, page.users], api_name="operator_refresh", show_progress="minimal")
    refresh.click(refresh_dashboard, inputs=[dashboard.rounds.job], outputs=everything, api_name="operator_dashboard",
                  api_visibility=OPERATOR_API, queue=False, show_progress="hidden")
    for opener in (page.opened.change, refresh.click):
        opener(latest_audit, outputs=[page.audit], **PRIVATE)
    page.timer.tick(tick, inputs=[dashboard.rounds.job, memo], outputs=everything, **PRIVATE)
    dashboard.rounds.job.input(show_curves, inputs=[dashboard.rounds.job], outputs=dashboard.rounds.curve_outputs,
                               **PRIVATE)
    # After an action, refresh through the timer's own path so `memo` stays what this page shows.
    wire_action_controls(ctx, page.controls, page.status,
                         then=lambda event: (event.success(tick, inputs=[dashboard.rounds.job, memo],
                                                           outputs=everything, **PRIVATE),
                                             event.success(latest_audit, outputs=[page.audit], **PRIVATE)))


def _audit_refresher(ctx: OperatorContext) -> Callable[[gr.Request], list[list[Any]]]:
    def latest_audit(request: gr.Request) -> list[list[Any]]:
        with ctx.checked(request):
            return audit_rows(ctx.db)

    return latest_audit

