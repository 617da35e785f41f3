"""One web server for both pages: the labeling page at `/` and the operator console at `/operator/`.

Each page is its own Gradio app (`gr.Blocks`), mounted with `gr.mount_gradio_app` on one FastAPI app: one
process, one port. An annotator's session builds Gradio state for the labeling page's blocks only; the
console's blocks exist for those who open it. Both apps share the database sessions and our login
(`auth.install_sessions`): log in once, open either page. Every console event still checks the operator
role on the server (`operator.common.OperatorContext.checked`).
"""

from __future__ import annotations

import inspect
import time
import typing
from dataclasses import dataclass
from typing import Any

import gradio as gr
from fastapi import FastAPI
from fastapi.responses import RedirectResponse
from fastapi.routing import APIRoute
from gradio import http_server

from labeling_app.app import CSS, THEME, TITLE, build_app, session_store
from labeling_app.auth import SessionStore, ensure_first_operator, install_sessions, make_login_check
from labeling_app.operator.page import CONSOLE_CSS, CONSOLE_TITLE, build_operator_console
from labeling_app.services import AppServices
from rlhf_core.workspace import Workspace
from storage import Database

OPERATOR_PATH = "/operator"
LOGIN_MESSAGE = "Log in with the account your operator gave you."


@dataclass
class ServedApp:
    """A running server (from `serve(..., block=False)`): its URL, its two Gradio apps, and how to stop it."""

    url: str
    blocks: gr.Blocks  # the labeling page, at `url`
    operator: gr.Blocks  # the operator console, at `operator_url`
    server: Any  # gradio.http_server.Server (a uvicorn server in its own thread)
    mounted: list[Any]  # the mounted Gradio apps (FastAPI sub-apps)

    @property
    def operator_url(self) -> str:
        return self.url.rstrip("/") + OPERATOR_PATH + "/"

    def close(self) -> None:
        """Stop both apps' queues and end their open event streams, then stop the server (it finishes the
        requests in flight)."""
        for app in self.mounted:
            app.get_blocks().close(verbose=False)  # its queue; Gradio would print "Closing server running on ..."
            app.stop_event.set()  # heartbeat streams end, so the server does not wait on open pages
        self.server.close()


def build_server(ws: Workspace, db: Database, services: AppServices | None = None,
                 sessions: SessionStore | None = None) -> tuple[FastAPI, dict[str, tuple[gr.Blocks, Any]]]:
    """The FastAPI app with the console mounted at `/operator` and the labeling page at `/` (in that order:
    the root mount would answer every path), sharing `sessions` and our login. Returns the app and, for
    "labeling" and "operator", the Blocks and the Gradio app mounted for it."""
    services = services or AppServices()
    sessions = session_store(ws, db) if sessions is None else sessions  # a store is falsy while empty
    pages = {  # name: (mount path, Blocks, CSS, title)
        "operator": (OPERATOR_PATH, build_operator_console(ws, db, services, sessions), CONSOLE_CSS, CONSOLE_TITLE),
        "labeling": ("/", build_app(ws, db, services, sessions), CSS, TITLE),
    }
    server = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
    mounted: dict[str, tuple[gr.Blocks, Any]] = {}
    for name, (path, blocks, css, _) in pages.items():
        introspect_once(blocks)
        gr.mount_gradio_app(server, blocks, path=path, css=css, auth=make_login_check(db), auth_message=LOGIN_MESSAGE,
                            show_error=False, theme=THEME, ssr_mode=False, mcp_server=False,
                            footer_links=["api", "settings"])
        mounted[name] = (blocks, server.router.routes[-1].app)  # the Gradio app behind the mount just added
    install_sessions(server, sessions, [(path, mounted[name][1], title) for name, (path, _, _, title) in pages.items()])
    # `/operator` (no slash) would reach the labeling page's mount and a 404 there.
    server.router.routes.insert(0, APIRoute(OPERATOR_PATH, _to_console, methods=["GET"], include_in_schema=False))
    return server, mounted


def introspect_once(blocks: gr.Blocks) -> None:
    """Resolve each event handler's type hints and signature once. Gradio reads both on every event (to
    find its `gr.Request`), and with postponed annotations (`from __future__ import annotations`, as
    here) `typing.get_type_hints` compiles every annotation string again each time: about 0.1 ms of
    CPU per labeling event, a few percent of its whole cost."""
    for block_fn in blocks.fns.values():
        fn = getattr(block_fn.fn, "__func__", block_fn.fn)  # a bound method's function
        if not inspect.isfunction(fn):
            continue
        try:
            fn.__annotations__ = typing.get_type_hints(fn)
        except (NameError, TypeError):  # a hint Gradio cannot resolve either: left to it
            continue
        fn.__signature__ = inspect.signature(fn)


def _to_console() -> RedirectResponse:
    return RedirectResponse(url=OPERATOR_PATH + "/", status_code=307)


def serve(ws: Workspace, db: Database, services: AppServices | None = None, host: str = "127.0.0.1",
          port: int = 7860, block: bool = True, *, quiet: bool = False) -> ServedApp:
    """Run the server with database logins. A first serve on a database without users creates an
    operator and prints its password once. With `block=False` returns at once (tests, benchmarks)."""
    first = ensure_first_operator(db)
    if first is not None:
        print(f"Created the first operator account.\n  username: {first[0]}\n  password: {first[1]}\n"
              "This password is shown once; keep it safe.", flush=True)
    server, mounted = build_server(ws, db, services)
    _, _, url, running = http_server.start_server(app=server, server_name=host, server_port=port)
    served = ServedApp(url=url, blocks=mounted["labeling"][0], operator=mounted["operator"][0], server=running,
                       mounted=[app for _, app in mounted.values()])
    if not quiet:
        print(f"Labeling page: {url}\nOperator console: {served.operator_url}", flush=True)
    if block:
        try:
            while running.thread.is_alive():
                time.sleep(0.1)
        except KeyboardInterrupt:
            pass
        finally:
            served.close()
    return served
