"""Labeling mode "steps" on the labeling page: one sampled response cut into steps (`labeling.step_split`), each
marked good, neutral or bad, or "the first wrong step is N" (earlier steps good, that one bad, the rest left open),
then saved (`storage.steps`). Built only when the workspace is in steps mode or names prompt sets in
`labeling.step_sets` (`labeling_app.modes`); it then shows instead of the pair view whenever a response waits for
this annotator's step labels, and the pair view comes back when none does (checked after each verdict and while
the page waits for work).

Keyboard: `G`/`N`/`B` label the current step good/neutral/bad and move to the next, `J`/`K` move down/up, `F` marks
the current step as the first wrong one, `Enter` saves, `S` skips; Tab and the arrow keys work as in any form.
Every event re-reads the user from the session, and saving re-reads the response from the database and cuts it
again: the client sends labels only, never the steps. The step texts are escaped, never HTML.
"""

from __future__ import annotations

import html
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import gradio as gr

from labeling_app.annotator_page import AnnotatorPage
from labeling_app.render import prompt_pane
from rlhf_core.data.steps import STEP_LABELS, StepLabelError, check_step_labels, labels_for_first_wrong, split_steps
from rlhf_core.workspace import Workspace
from storage import (
    Database,
    JudgmentError,
    SessionUser,
    StepTask,
    StepTaskGone,
    next_step_task,
    record_step_labels,
    served_step_task,
    skip_step_task,
)

LEGEND = ("**Keys:** `G`/`N`/`B` this step good / neutral / bad (then the next) · `J`/`K` next / previous step · "
          "`F` this is the first wrong step · `Enter` save · `S` skip")
HELP = ("Judge each step on its own: **good** (right and useful), **neutral** (neither: a restatement, a harmless "
        "detour) or **bad** (wrong). Or mark only the first wrong step: the steps before it count as good, the ones "
        "after it stay unlabeled.")
STEP_CSS = """
body.rlhf-steps #pair-area, body.rlhf-steps #empty-area, body.rlhf-steps #demo-area { display: none !important; }
body:not(.rlhf-steps) #steps-area { display: none !important; }
#steps-area .step-text { white-space: pre-wrap; overflow-wrap: anywhere; font-size: 15px; padding: 6px 10px;
  border-left: 3px solid var(--border-color-primary); }
#steps-area .step-row:focus-within .step-text { border-left-color: var(--color-accent); }
"""
# After each step screen: the step view shows while a response is on it; a new response puts focus on its first step.
SCREEN_JS = """
(token) => {
  const shown = !!token;
  const fresh = (token || "") !== (window.__rlhfStepToken || "");
  window.__rlhfStepToken = token || "";
  document.body.classList.toggle("rlhf-steps", shown);
  if (shown && fresh) setTimeout(() => {
    const first = document.querySelector("#steps-area .step-row input[type=radio]");
    if (first) first.focus();
  }, 50);
}
"""
KEYS_JS = """
() => {
  if (window.__rlhfStepKeys) return;
  window.__rlhfStepKeys = true;
  const labelKeys = {g: 0, n: 1, b: 2};
  const textTypes = ["text", "search", "email", "password", "number", "url", "tel"];
  const typing = (el) => !!el && (el.isContentEditable || el.tagName === "TEXTAREA" ||
    (el.tagName === "INPUT" && textTypes.includes(el.type)));
  const rows = () => [...document.querySelectorAll("#steps-area .step-row")].filter((r) => r.offsetParent !== null);
  const current = () => {
    const all = rows();
    const focused = all.findIndex((r) => r.contains(document.activeElement));
    if (focused >= 0) return focused;
    const open = all.findIndex((r) => !r.querySelector("input[type=radio]:checked"));
    return open >= 0 ? open : all.length - 1;
  };
  const focusRow = (i) => {
    const row = rows()[Math.max(0, Math.min(i, rows().length - 1))];
    if (row) (row.querySelector("input[type=radio]:checked") || row.querySelector("input[type=radio]")).focus();
  };
  const press = (id) => { const b = document.getElementById(id); if (b && b.offsetParent !== null) b.click(); };
  document.addEventListener("keydown", (ev) => {
    if (!document.body.classList.contains("rlhf-steps") || ev.ctrlKey || ev.metaKey || ev.altKey) return;
    if (typing(ev.target) || ev.repeat) return;
    const key = (ev.key || "").toLowerCase();
    const i = current();
    if (key in labelKeys) {
      const input = rows()[i] && rows()[i].querySelectorAll("input[type=radio]")[labelKeys[key]];
      if (!input) return;
      ev.preventDefault();
      input.click();
      focusRow(i + 1);
    } else if (key === "j" || key === "k") {
      ev.preventDefault();
      focusRow(i + (key === "j" ? 1 : -1));
    } else if (key === "f") {
      const choice = document.querySelectorAll("#first-wrong input[type=radio]")[i + 1];
      if (choice) { ev.preventDefault(); choice.click(); }
    } else if (key === "enter" && !(ev.target.closest && ev.target.closest("button, a"))) {
      ev.preventDefault();
      press("btn-steps-save");
    } else if (key === "s") {
      ev.preventDefault();
      press("btn-steps-skip");
    }
  });
}
"""
FAST = {"queue": False, "show_progress": "hidden"}


@dataclass
class StepView:
    prompt: gr.HTML
    rows: list[gr.Row]
    texts: list[gr.HTML]
    radios: list[gr.Radio]
    first_wrong: gr.Radio
    token: gr.Textbox  # the sample id on screen ("" while none)
    n_steps: gr.State
    notice: gr.Markdown
    save: gr.Button
    skip: gr.Button

    @property
    def outputs(self) -> list[Any]:
        return [self.prompt, self.token, self.n_steps, self.first_wrong, self.notice, *self.rows, *self.texts,
                *self.radios]


class StepLabeling:
    """The step view's events, free of layout: the screen for a user, save, skip."""

    def __init__(self, ws: Workspace, db: Database) -> None:
        self.db, self.cfg = db, ws.config.labeling
        self.sources = None if self.cfg.mode == "steps" else list(self.cfg.step_sets)

    def steps(self, task: StepTask) -> list[str]:
        return split_steps(task.text, self.cfg.step_split, self.cfg.step_separator, self.cfg.max_steps)

    def next_task(self, user: SessionUser) -> tuple[StepTask, list[str]] | None:
        while (task := next_step_task(self.db, user.id, sources=self.sources, wanted=self.cfg.step_labels_per_response,
                                      lease_seconds=self.cfg.lease_seconds)) is not None:
            if steps := self.steps(task):
                return task, steps
            skip_step_task(self.db, user.id, task.sample_id)  # only whitespace: nothing to label
        return None

    def save(self, user: SessionUser, token: str, labels: list[str | None], marked: str | None, address: str) -> str:
        """Store the labels of the response on screen (`marked`: the first wrong step chosen, if any); the notice to
        show. StepLabelError or StepTaskGone say why not."""
        if not str(token or "").isdigit():
            raise StepLabelError("Not saved: no response is shown.")
        task = served_step_task(self.db, user.id, int(token))
        steps = self.steps(task)
        labels = check_step_labels(labels[:len(steps)], len(steps))
        k = int(marked) if str(marked or "").isdigit() else 0
        # Recorded as marked only while the labels still say so (the annotator may have changed a step since).
        first_wrong = k if 1 <= k <= len(labels) and labels[k - 1] == "bad" and "bad" not in labels[:k - 1] else None
        created = record_step_labels(self.db, user.id, task.sample_id, steps=steps, labels=labels,
                                     first_wrong=first_wrong, actor=user.username, address=address)
        bad = labels.count("bad")
        return (f"Saved the labels of response #{task.sample_id}: {len(steps)} steps, {bad} bad." if created
                else f"Response #{task.sample_id} was already saved.")


class ShownTasks:
    """The response last sent to each browser session (Gradio's `session_hash`), so that a screen event answered
    late (the page's load and its first "check for work" race; a slow server) cannot send the same response again
    and wipe the labels the annotator has begun on it. Holds the newest `capacity` sessions."""

    def __init__(self, capacity: int = 4096) -> None:
        self._sent: OrderedDict[str, str] = OrderedDict()
        self._lock = threading.Lock()
        self.capacity = capacity

    def claim(self, session: str | None, token: str) -> bool:
        """Record `token` as sent to `session`; False when it already was (the caller then sends nothing)."""
        if not session:
            return True
        with self._lock:
            fresh = self._sent.get(session) != token
            self._sent[session] = token
            self._sent.move_to_end(session)
            while len(self._sent) > self.capacity:
                self._sent.popitem(last=False)
            return fresh


def _step_html(text: str) -> str:
    return f'<div class="step-text">{html.escape(text, quote=False)}</div>'


def _values(view: StepView, found: tuple[StepTask, list[str]] | None, notice: str) -> list[Any]:
    """Output values for `view.outputs`: the response's prompt and steps, or an empty view."""
    task, steps = found if found else (None, [])
    n = len(view.rows)
    choices = [("none: every step is right", "0")] + [(f"step {i}", str(i)) for i in range(1, len(steps) + 1)]
    turns = tuple((m.get("role", ""), m.get("content", "")) for m in task.prompt_messages) if task else ()
    return [prompt_pane(turns) if task else "", str(task.sample_id) if task else "", len(steps),
            gr.Radio(choices=choices, value=None), notice,
            *[gr.Row(visible=i < len(steps)) for i in range(n)],
            *[_step_html(steps[i]) if i < len(steps) else "" for i in range(n)], *[None] * n]


def build_step_view(page: AnnotatorPage, ws: Workspace, db: Database, demo: gr.Blocks) -> StepView:
    """Lay out the step view beside the annotator page and wire its events (see the module docstring)."""
    rows, texts, radios = [], [], []
    with gr.Column(elem_id="steps-area"):
        gr.Markdown("## Label the steps of this response", elem_id="steps-title")
        gr.Markdown(HELP, elem_id="steps-help")
        prompt = gr.HTML(elem_id="steps-prompt", elem_classes=["pane"], js_on_load=None)
        for i in range(1, ws.config.labeling.max_steps + 1):
            with gr.Row(visible=False, elem_id=f"step-row-{i}", elem_classes=["step-row"], equal_height=True) as row:
                texts.append(gr.HTML(elem_id=f"step-text-{i}", js_on_load=None))
                radios.append(gr.Radio(list(STEP_LABELS), value=None, label=f"Step {i}", elem_id=f"step-{i}",
                                       scale=0, min_width=260))
            rows.append(row)
        first_wrong = gr.Radio([], value=None, label="Or mark the first wrong step  [F]", elem_id="first-wrong")
        with gr.Row():
            save = gr.Button("Save step labels  [Enter]", variant="primary", elem_id="btn-steps-save")
            skip = gr.Button("Skip  [S]", variant="secondary", elem_id="btn-steps-skip")
        notice = gr.Markdown(elem_id="steps-notice")
        gr.Markdown(LEGEND, elem_id="steps-legend")
    token = gr.Textbox(visible=False, elem_id="step-task")
    view = StepView(prompt=prompt, rows=rows, texts=texts, radios=radios, first_wrong=first_wrong, token=token,
                    n_steps=gr.State(0), notice=notice, save=save, skip=skip)
    _wire(view, StepLabeling(ws, db), page, demo)
    return view


def _wire(view: StepView, labeling: StepLabeling, page: AnnotatorPage, demo: gr.Blocks) -> None:
    def refused(exc: Exception) -> gr.Error:
        message = "This account is disabled or no longer exists." if isinstance(exc, JudgmentError) else str(exc)
        return gr.Error(message, print_exception=False)

    shown_tasks = ShownTasks()

    def sent(request: gr.Request, values: list[Any]) -> list[Any]:
        shown_tasks.claim(getattr(request, "session_hash", None), values[1])
        return values

    def screen(request: gr.Request, on_screen: str | None = None) -> list[Any]:
        """The response to label (or none), unless this session was already sent it: then nothing changes."""
        try:
            values = _values(view, labeling.next_task(page.user(request)), "")
        except JudgmentError as exc:
            raise refused(exc) from exc
        fresh = shown_tasks.claim(getattr(request, "session_hash", None), values[1])
        return values if fresh and values[1] != on_screen else [gr.skip()] * len(values)

    def save(values: dict[Any, Any], request: gr.Request) -> list[Any]:
        """`values`: the token, each step's radio and the first wrong step (Gradio passes a set of inputs as one
        dict)."""
        user = page.user(request)
        client = getattr(request, "client", None)
        labels = [values.get(radio) for radio in view.radios]
        try:
            notice = labeling.save(user, values.get(view.token, ""), labels, values.get(view.first_wrong),
                                   getattr(client, "host", "") or "")
            return sent(request, _values(view, labeling.next_task(user), notice))
        except StepLabelError as exc:  # the labels on screen stay, with the sentence on what to fix
            return [gr.skip()] * 4 + [str(exc)] + [gr.skip()] * (len(view.outputs) - 5)
        except StepTaskGone as exc:  # that response is not theirs any more: the next one, and why
            return sent(request, _values(view, labeling.next_task(user), str(exc)))
        except JudgmentError as exc:
            raise refused(exc) from exc

    def skip(token: str, request: gr.Request) -> list[Any]:
        user = page.user(request)
        try:
            if str(token or "").isdigit():
                skip_step_task(labeling.db, user.id, int(token))
            notice = f"Skipped response #{token}." if token else ""
            return sent(request, _values(view, labeling.next_task(user), notice))
        except JudgmentError as exc:
            raise refused(exc) from exc

    def fill(first_wrong: str | None, n: int, request: gr.Request) -> list[Any]:
        page.user(request)
        if first_wrong is None or not str(first_wrong).isdigit():
            return [gr.skip()] * len(view.radios)
        try:
            labels = labels_for_first_wrong(int(n or 0), int(first_wrong))
        except StepLabelError as exc:
            raise refused(exc) from exc
        return labels + [None] * (len(view.radios) - len(labels))

    def screen_if_new(token: str, request: gr.Request) -> list[Any]:
        """From the pair view's events: a response to label now, unless it is the one on screen (whose labels
        in progress must stay)."""
        return screen(request, token)

    def shown(event: Any) -> None:  # noqa: ANN401 - a Gradio dependency
        event.then(None, inputs=[view.token], js=SCREEN_JS, **FAST)

    shown(demo.load(screen, outputs=view.outputs, api_name="next_step_task", **FAST))
    shown(view.save.click(save, inputs={view.token, view.first_wrong, *view.radios}, outputs=view.outputs,
                          api_name="save_step_labels", **FAST))
    shown(view.skip.click(skip, inputs=[view.token], outputs=view.outputs, api_name="skip_step_task", **FAST))
    view.first_wrong.input(fill, inputs=[view.first_wrong, view.n_steps], outputs=view.radios,
                           api_visibility="private", **FAST)
    for pair_event in (page.token.change, page.check.click):  # after a verdict, and while waiting for work
        shown(pair_event(screen_if_new, inputs=[view.token], outputs=view.outputs, api_visibility="private", **FAST))
    demo.load(None, js=KEYS_JS)
