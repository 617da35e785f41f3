"""The operator tab's "Try it" panel: type a prompt, pick two policy versions (default: the newest and
v0, the base), and read both answers side by side. Generated in the serving process on the pool
sampler's model (`AppServices.try_versions`), in Gradio's queue one request at a time: annotators'
events do not go through that queue, so they never wait on it. Operator-only on the server, like
every event of the tab; answers are shown as inert text."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gradio as gr

from labeling_app.operator.common import OPERATOR_API, PRIVATE, OperatorContext
from rlhf_core.service.playground import MAX_TRY_TOKENS, VersionChoiceError, version_choices

NO_MODEL = ("No model is attached to this server (it runs without a sampler), so nothing can be generated "
            "here: run `rlhf generate --version N --compare M \"PROMPT\"` on a machine with the workspace.")


@dataclass
class TryIt:
    panel: gr.Accordion
    prompt: gr.Textbox
    version_a: gr.Dropdown
    version_b: gr.Dropdown
    greedy: gr.Checkbox
    max_new_tokens: gr.Slider
    generate: gr.Button
    answer_a: gr.Textbox
    answer_b: gr.Textbox
    note: gr.Markdown


def _pickers(db: Any) -> tuple[gr.Dropdown, gr.Dropdown]:  # noqa: ANN401 - storage.Database
    choices = version_choices(db)
    newest = choices[0][1] if choices else 0
    return (gr.Dropdown(choices=choices, value=newest), gr.Dropdown(choices=choices, value=0))


def build_try_it(ctx: OperatorContext) -> TryIt:
    with gr.Accordion("Try it: what do versions answer?", open=False, elem_id="try-it") as panel:
        prompt = gr.Textbox(label="Prompt", lines=3, max_lines=12, elem_id="try-prompt",
                            placeholder="A question for the model, as a user would ask it")
        with gr.Row(equal_height=True):
            # Choices are filled when the panel opens (versions appear as rounds finish); the handler checks the
            # value itself, so a version made after the page loaded can be named through the API too.
            version_a = gr.Dropdown(label="Version A", choices=[], allow_custom_value=True, elem_id="try-version-a")
            version_b = gr.Dropdown(label="Version B", choices=[], allow_custom_value=True, elem_id="try-version-b")
            greedy = gr.Checkbox(value=True, label="Greedy", elem_id="try-greedy",
                                 info="the most likely token each step; off: sampling.temperature and top_p")
            max_new_tokens = gr.Slider(8, MAX_TRY_TOKENS, value=ctx.ws.config.sampling.max_new_tokens, step=8,
                                       label="Max new tokens", elem_id="try-max-tokens")
        generate = gr.Button("Generate", variant="primary", elem_id="btn-try")
        with gr.Row(equal_height=True):
            answer_a = gr.Textbox(label="Version A answers", lines=8, max_lines=30, interactive=False,
                                  buttons=["copy"], elem_id="try-answer-a")
            answer_b = gr.Textbox(label="Version B answers", lines=8, max_lines=30, interactive=False,
                                  buttons=["copy"], elem_id="try-answer-b")
        note = gr.Markdown(elem_id="try-note")
    return TryIt(panel=panel, prompt=prompt, version_a=version_a, version_b=version_b, greedy=greedy,
                 max_new_tokens=max_new_tokens, generate=generate, answer_a=answer_a, answer_b=answer_b, note=note)


def _label(response: Any) -> str:  # noqa: ANN401 - rlhf_core.service.playground.TriedResponse
    cut = ", cut off" if response.finish_reason == "length" else ""
    return f"v{response.version} answers ({response.tokens} tokens{cut})"


def wire_try_it(ctx: OperatorContext, panel: TryIt) -> None:
    def refresh_versions(request: gr.Request) -> tuple[gr.Dropdown, gr.Dropdown]:
        with ctx.checked(request):
            return _pickers(ctx.db)

    def generate(prompt: str | None, version_a: int | None, version_b: int | None, greedy: bool,
                 max_new_tokens: float | None, request: gr.Request) -> tuple[gr.Textbox, gr.Textbox, str]:
        ctx.require(request)  # the role check alone: generation must not hold the database gate
        empty = (gr.Textbox(value="", label="Version A answers"), gr.Textbox(value="", label="Version B answers"))
        if ctx.services.try_versions is None:
            return (*empty, NO_MODEL)
        if not (prompt or "").strip():
            return (*empty, "Type a prompt first.")
        if version_a is None or version_b is None:
            return (*empty, "Pick two versions.")
        try:
            versions = [int(str(v).strip().lstrip("v").split()[0]) for v in (version_a, version_b)]
        except (ValueError, IndexError):
            return (*empty, f"**Not generated:** pick versions from the lists, not {version_a!r} / {version_b!r}.")
        try:
            a, b = ctx.services.try_versions(prompt, versions, bool(greedy), int(max_new_tokens or 64))
        except VersionChoiceError as exc:
            return (*empty, f"**Not generated:** {exc}")
        how = "greedy" if greedy else "sampled (seed 0)"
        return (gr.Textbox(value=a.text, label=_label(a)), gr.Textbox(value=b.text, label=_label(b)),
                f"Both answers {how}, at most {int(max_new_tokens or 64)} new tokens.")

    panel.panel.expand(refresh_versions, outputs=[panel.version_a, panel.version_b], **PRIVATE)
    panel.generate.click(generate, inputs=[panel.prompt, panel.version_a, panel.version_b, panel.greedy,
                                           panel.max_new_tokens],
                         outputs=[panel.answer_a, panel.answer_b, panel.note], api_name="try_versions",
                         api_visibility=OPERATOR_API, concurrency_limit=1)
