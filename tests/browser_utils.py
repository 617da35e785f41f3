"""Helpers for the labeling app tests: a served app on a free loopback port, users, pairs, and
Chromium through Playwright (Debian's /usr/bin/chromium; never `playwright install`)."""

from __future__ import annotations

import socket
import uuid
from dataclasses import dataclass
from pathlib import Path

from sqlmodel import select

from labeling_app import AppServices, ServedApp, serve
from rlhf_core.workspace import Workspace, init_workspace
from storage import Database, Prompt, add_prompts, content_hash, create_annotator, record_generations

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]
PASSWORD = "correct-horse-9"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class RunningApp:
    ws: Workspace
    db: Database
    served: ServedApp

    @property
    def url(self) -> str:
        return self.served.url

    @property
    def operator_url(self) -> str:
        """The operator console, its own Gradio app on the same server."""
        return self.served.operator_url

    def close(self) -> None:
        self.served.close()
        self.db.dispose()


def start_app(root: Path, services: AppServices | None = None, users: dict[str, str] | None = None) -> RunningApp:
    """A fresh workspace under `root` with `users` ({name: role}, password `PASSWORD`), served."""
    ws, _ = init_workspace(root)
    db = ws.database()
    for name, role in (users or {}).items():
        create_annotator(db, name, PASSWORD, role=role)
    served = serve(ws, db, services, port=free_port(), block=False, quiet=True)
    return RunningApp(ws=ws, db=db, served=served)


def add_pairs(db: Database, texts: list[tuple[str, str]], prompt: list[dict[str, str]] | None = None) -> list[int]:
    """One pair per `(text_a, text_b)`, each on its own prompt (`prompt` plus a unique tag)."""
    ids = []
    for text_a, text_b in texts:
        conv = [dict(m) for m in (prompt or [{"role": "user", "content": "Which is better?"}])]
        conv[-1]["content"] += f" [{uuid.uuid4().hex[:6]}]"
        add_prompts(db, [conv])
        with db.session() as s:
            prompt_id = s.exec(select(Prompt.id).where(Prompt.content_hash == content_hash(conv))).one()
        pair = record_generations(db, prompt_id=prompt_id, policy_version_id=0, responses=[(text_a, 1), (text_b, 1)],
                                  gen_params={}, pairs=[(0, 1)])[0]
        ids.append(pair.id)
    return ids


def login(page, url: str, username: str, password: str = PASSWORD) -> None:  # noqa: ANN001 - playwright Page
    page.goto(url)
    page.get_by_label("username").fill(username)
    page.get_by_label("password").fill(password)
    page.get_by_role("button", name="Login").click()


def open_console(page) -> None:  # noqa: ANN001 - playwright Page of a logged-in operator on the labeling page
    """Follow the labeling page's link to the operator console and wait until it has filled in (the live
    status, and the rounds section, which the dashboard's event fills last)."""
    page.locator("#link-operator").click()
    page.wait_for_url("**/operator/")
    page.locator("#pool-status").get_by_text("Policy version").wait_for()
    page.wait_for_function("() => (document.querySelector('#rounds-note')?.innerText || '').trim() !== ''")


def choose_file(page, elem_id: str, path: Path) -> None:  # noqa: ANN001 - playwright Page
    """Choose `path` in the gr.File `#elem_id` and wait until the upload is done: the file's row, labelled with
    its name, is shown. (Its visible text splits the name into stem and suffix; while the upload runs, a
    progress line shows the whole name, so waiting on the text passed or timed out by the race.)"""
    page.locator(f"#{elem_id} input[type=file]").set_input_files(str(path))
    page.locator(f"#{elem_id}").get_by_label(path.name, exact=True).wait_for()


def clear_file(page, elem_id: str, name: str) -> None:  # noqa: ANN001 - playwright Page
    """Click "Clear" on the gr.File `#elem_id` showing `name` and wait until its row is gone, so that the next
    choice goes to the new file input that Gradio mounts."""
    page.locator(f"#{elem_id}").get_by_label("Clear").click()
    page.locator(f"#{elem_id}").get_by_label(name, exact=True).wait_for(state="detached")


# A pane's raw text (always in the page; shown by the "show raw text" toggle) and its rendered Markdown.
LEFT_RAW, RIGHT_RAW, PROMPT_RAW = "#response-left .raw", "#response-right .raw", "#prompt .raw"
PAIR_SHOWN = "#response-left .rendered"  # visible while a pair is on screen (and raw text is off)


def shown_texts(page) -> tuple[str, str]:  # noqa: ANN001
    """The raw texts of the responses on the left and on the right."""
    return page.locator(LEFT_RAW).text_content(), page.locator(RIGHT_RAW).text_content()


def wait_for_new_pair(page, previous_left: str, timeout_ms: int = 10_000) -> None:  # noqa: ANN001
    """Wait until the left response differs from `previous_left` (the next pair is on screen)."""
    page.wait_for_function(
        "prev => { const t = document.querySelector('#response-left .raw');"
        " const pane = document.querySelector('#response-left');"
        " return t && pane.offsetParent !== null && t.textContent !== '' && t.textContent !== prev; }",
        arg=previous_left, timeout=timeout_ms,
    )
