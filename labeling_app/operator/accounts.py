"""Accounts on the Operator tab: add a user (a generated password, shown once), disable or enable one,
reset a password (a new generated one, shown once), change a role.

The rules are the CLI's (`rlhf user ...`, storage.accounts.users): names of 1-64 printable characters,
passwords of at least `auth.min_password_length`; every change ends the user's open sessions (a disable
also frees the pairs they hold) and writes one audit row with the operator as actor. The operator's
own account cannot be disabled or demoted here (that would lock the page's only operator out; a shell
can still do it). Each event checks the operator role on the server, also when called through the
API by name or index (`OperatorContext.checked`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import gradio as gr

from labeling_app.operator.common import OPERATOR_API, PRIVATE, OperatorContext
from labeling_app.render import plain_markdown
from rlhf_core.service.accounts import add_user, change_password, change_role, set_user_active
from rlhf_core.service.actor import ActionRefused, Actor
from storage import ROLES, list_annotators

ACTIONS = ("disable", "enable", "reset password", "set role")


@dataclass
class AccountsSection:
    new_name: gr.Textbox
    new_role: gr.Dropdown
    add: gr.Button
    who: gr.Dropdown
    role: gr.Dropdown
    buttons: dict[str, gr.Button]  # one per ACTIONS entry
    result: gr.Markdown
    events: list[Any] = field(default_factory=list)  # each change's event, for the page to chain refreshes to


def _shown_once(name: str, password: str, what: str, note: str = "") -> str:
    return (f"{what} **{plain_markdown(name)}**{note}. Their password is `{password}`: it is shown this once, so "
            "give it to them now (a reset makes a new one).")


def build_accounts_section(ctx: OperatorContext, users: gr.Dataframe,
                           user_rows: Callable[[], list[list[Any]]]) -> AccountsSection:
    """Lay out the section (under the user list `users`) and wire its events; `user_rows()` gives the
    list's rows after a change (the caller holds the gate)."""
    with gr.Group(elem_id="accounts"):
        gr.Markdown("#### Change accounts", elem_id="accounts-title")
        with gr.Row(equal_height=True):
            new_name = gr.Textbox(label="New user's name", max_length=64, elem_id="account-new-name", scale=2)
            new_role = gr.Dropdown(list(ROLES), value="annotator", label="Role of the new user",
                                   elem_id="account-new-role", scale=1)
            add = gr.Button("Add user", variant="primary", elem_id="btn-account-add", scale=0, min_width=120)
        with gr.Row(equal_height=True):
            # Custom values allowed: the choices are filled per browser session; the handler checks the name.
            who = gr.Dropdown([], label="User to change", allow_custom_value=True, elem_id="account-who", scale=2)
            role = gr.Dropdown(list(ROLES), value="annotator", label="Role to set", elem_id="account-role", scale=1)
        with gr.Row():
            buttons = {action: gr.Button(action.capitalize(), size="sm",
                                         elem_id="btn-account-" + action.replace(" ", "-")) for action in ACTIONS}
        result = gr.Markdown(elem_id="account-result")
    section = AccountsSection(new_name=new_name, new_role=new_role, add=add, who=who, role=role, buttons=buttons,
                              result=result)
    _wire(ctx, section, users, user_rows)
    return section


def refresh_choices(ctx: OperatorContext, section: AccountsSection, *openers: Callable[..., Any]) -> None:
    """Fill the user picker whenever one of `openers` (the tab's select, Refresh) fires."""
    def choices(current: str | None, request: gr.Request) -> gr.Dropdown:
        with ctx.checked(request):
            return _picker(ctx, current)

    for opener in openers:
        opener(choices, inputs=[section.who], outputs=[section.who], **PRIVATE)


def _picker(ctx: OperatorContext, current: str | None) -> gr.Dropdown:
    names = [u.username for u in list_annotators(ctx.db)]
    return gr.Dropdown(choices=names, value=current if current in names else None)


def _wire(ctx: OperatorContext, section: AccountsSection, users: gr.Dataframe,
          user_rows: Callable[[], list[list[Any]]]) -> None:
    outputs = [section.result, section.who, users]

    def done(message: str, current: str | None) -> list[Any]:
        return [message, _picker(ctx, current), user_rows()]

    def account_add(name: str, role: str, request: gr.Request) -> list[Any]:
        with ctx.checked(request) as operator:
            try:
                user, password = add_user(ctx.ws, ctx.db, name or "", role, ctx.actor(operator, request))
            except ActionRefused as exc:
                return [f"Not added: {plain_markdown(str(exc))}.", gr.skip(), gr.skip()]
            return done(_shown_once(user.username, password, f"Added {user.role}"), user.username)

    def change(action: str) -> Callable[..., list[Any]]:
        def handler(name: str | None, role: str, request: gr.Request) -> list[Any]:
            with ctx.checked(request) as operator:
                if not name:
                    return ["Pick a user to change first.", gr.skip(), gr.skip()]
                try:
                    message = _apply(ctx, ctx.actor(operator, request), action, name, role)
                except ActionRefused as exc:
                    return [f"Not done: {plain_markdown(str(exc))}.", gr.skip(), gr.skip()]
                return done(message, name)

        handler.__name__ = f"account_{action.replace(' ', '_')}"
        return handler

    section.events.append(section.add.click(account_add, inputs=[section.new_name, section.new_role], outputs=outputs,
                                            api_name="account_add", api_visibility=OPERATOR_API, queue=False,
                                            show_progress="hidden"))
    for action, button in section.buttons.items():
        section.events.append(button.click(change(action), inputs=[section.who, section.role], outputs=outputs,
                                           api_name=f"account_{action.replace(' ', '_')}",
                                           api_visibility=OPERATOR_API, queue=False, show_progress="hidden"))


def _apply(ctx: OperatorContext, actor: Actor, action: str, name: str, role: str) -> str:
    """Do one change to `name`'s account through the action service (which audits it); the page's sentence."""
    who = f"**{plain_markdown(name)}**"
    if action in ("disable", "enable"):
        ended = set_user_active(ctx.db, name, action == "enable", actor).sessions_ended
        return f"{action.capitalize()}d {who} ({ended} open sessions ended" + (
            ", the pairs they held freed)." if action == "disable" else ").")
    if action == "reset password":
        change = change_password(ctx.ws, ctx.db, name, actor)
        return _shown_once(name, change.password, "New password for", f" ({change.sessions_ended} open sessions ended)")
    ended = change_role(ctx.db, name, role, actor).sessions_ended
    return f"{who} is now {role} ({ended} open sessions ended)."
