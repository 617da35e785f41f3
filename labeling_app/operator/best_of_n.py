"""The operator console's best-of-N panel, beside "Try it": type a prompt, pick a policy version, N and what ranks
the answers (the reward model, the process reward model or the reward functions: the registry's
BEST_OF_N_SCORERS), and read all N answers with their scores and the one kept. Generated in the serving process on
the pool sampler's model (`AppServices.best_of_n`), in Gradio's queue one request at a time, like "Try it";
operator-only on the server; answers are shown as inert text."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gradio as gr

from labeling_app.operator.common import OPERATOR_API, PRIVATE, OperatorContext
from rlhf_core.registry import BEST_OF_N_SCORERS
from rlhf_core.service.best_of_n import MAX_BEST_OF, BestOfNError
from rlhf_core.service.playground import VersionChoiceError, version_choices

COLUMNS = ["#", "score", "kept", "tokens", "answer"]
NO_MODEL = ("No model is attached to this server (it runs without a sampler), so nothing can be generated here: run "
            "`rlhf generate --best-of N --by rm \"PROMPT\"` on a machine with the workspace.")


@dataclass
class BestOfNPanel:
    panel: gr.Accordion
    prompt: gr.Textbox
    version: gr.Dropdown
    n: gr.Slider
    by: gr.Radio
    generate: gr.Button
    candidates: gr.Dataframe
    kept: gr.Textbox
    note: gr.Markdown


def build_best_of_n(ctx: OperatorContext) -> BestOfNPanel:
    with gr.Accordion("Best of N: sample N answers, keep the best", open=False, elem_id="best-of-n") as panel:
        prompt = gr.Textbox(label="Prompt", lines=3, max_lines=12, elem_id="bon-prompt",
                            placeholder="A question for the model, as a user would ask it")
        with gr.Row(equal_height=True):
            version = gr.Dropdown(label="Version", choices=[], allow_custom_value=True, elem_id="bon-version")
            n = gr.Slider(2, MAX_BEST_OF, value=8, step=1, label="N (answers sampled)", elem_id="bon-n")
            by = gr.Radio([(f"{s.name}: {s.help}", s.name) for s in BEST_OF_N_SCORERS.values()], value="rm",
                          label="Rank by", elem_id="bon-by")
        generate = gr.Button("Sample and rank", variant="primary", elem_id="btn-bon")
        kept = gr.Textbox(label="Kept answer", lines=6, max_lines=30, interactive=False, buttons=["copy"],
                          elem_id="bon-kept")
        candidates = gr.Dataframe(headers=COLUMNS, interactive=False, wrap=True, label="All answers, as sampled",
                                  elem_id="bon-candidates")
        note = gr.Markdown(elem_id="bon-note")
    return BestOfNPanel(panel=panel, prompt=prompt, version=version, n=n, by=by, generate=generate,
                        candidates=candidates, kept=kept, note=note)


def candidate_rows(result: Any) -> list[list[Any]]:  # noqa: ANN401 - rlhf_core.service.best_of_n.BestOfN
    return [[i + 1, "—" if c.score is None else round(c.score, 4), "yes" if i == result.chosen else "", c.tokens,
             c.text] for i, c in enumerate(result.candidates)]


def wire_best_of_n(ctx: OperatorContext, panel: BestOfNPanel) -> None:
    def refresh_versions(request: gr.Request) -> gr.Dropdown:
        with ctx.checked(request):
            choices = version_choices(ctx.db)
            return gr.Dropdown(choices=choices, value=choices[0][1] if choices else 0)

    def generate(prompt: str | None, version: Any, n: float | None, by: str | None,  # noqa: ANN401
                 request: gr.Request) -> tuple[list[list[Any]], str, str]:
        ctx.require(request)  # the role check alone: generation must not hold the database gate
        if ctx.services.best_of_n is None:
            return [], "", NO_MODEL
        if not (prompt or "").strip():
            return [], "", "Type a prompt first."
        try:
            number = None if version in (None, "") else int(str(version).strip().lstrip("v").split()[0])
        except (ValueError, IndexError):
            return [], "", f"**Not generated:** pick a version from the list, not {version!r}."
        try:
            result = ctx.services.best_of_n(prompt, number, int(n or 8), by or "rm")
        except (BestOfNError, VersionChoiceError) as exc:
            return [], "", f"**Not generated:** {exc}"
        return (candidate_rows(result), result.best.text,
                f"v{result.version}: {len(result.candidates)} answers sampled, ranked by {result.by}; kept answer "
                f"{result.chosen + 1}.")

    panel.panel.expand(refresh_versions, outputs=[panel.version], **PRIVATE)
    panel.generate.click(generate, inputs=[panel.prompt, panel.version, panel.n, panel.by],
                         outputs=[panel.candidates, panel.kept, panel.note], api_name="best_of_n",
                         api_visibility=OPERATOR_API, concurrency_limit=1)
