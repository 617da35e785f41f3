"""The Actions block of the operator tab: start a round, queue an evaluation batch, sample more pairs,
export the dataset, import control pairs. Every handler checks the operator role on the server first, then calls
`actions` (or the app's sampler) and renders a sentence."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import gradio as gr

from labeling_app.operator.actions import (
    ALGORITHMS,
    MAX_EVAL_PROMPTS,
    ActionRefused,
    ExportStaging,
    create_eval_batch,
    export_dataset,
    export_summary,
    import_controls,
    start_round,
)
from labeling_app.operator.common import OPERATOR_API, OperatorContext
from labeling_app.operator.status import pool_status_markdown
from labeling_app.render import plain_markdown
from rlhf_core.data.export import FORMATS, ExportError
from storage import status_counts

MAX_PAIRS_PER_REQUEST = 10_000
REFUSED = "**Not started:** "
NOT_IMPORTED = "**Not imported:** "
CONTROLS_HELP = (
    "Control pairs have a known answer and measure each annotator's accuracy (Annotation quality below). "
    "They are mixed into every annotator's pairs at `labeling.control_rate`, look like any other pair, are "
    "never shown twice to one person and never used for training or exports. File: JSONL or CSV with `prompt` "
    "(or `messages`), `response_a`, `response_b` and `expected` (a, b, tie or both_bad); a bad line refuses the "
    "whole file."
)


@dataclass
class ActionControls:
    algo: gr.Radio
    start_round: gr.Button
    eval_prompts: gr.Number
    eval_batch: gr.Button
    n_pairs: gr.Number
    sample: gr.Button
    result: gr.Markdown
    fmt: gr.Radio
    min_agreement: gr.Slider
    include_ties: gr.Checkbox
    anonymize: gr.Checkbox
    export: gr.Button
    download: gr.File
    export_result: gr.Markdown
    controls_file: gr.File
    import_controls: gr.Button
    controls_result: gr.Markdown


def build_action_controls(ctx: OperatorContext) -> ActionControls:
    gr.Markdown("### Actions")
    default_algo = next((k for k, v in ALGORITHMS.items() if v == ctx.ws.config.policy.algo), "GRPO")
    with gr.Row(equal_height=True):
        with gr.Column(variant="panel"):
            algo = gr.Radio(list(ALGORITHMS), value=default_algo, label="Policy update", elem_id="round-algo")
            start = gr.Button("Start round", variant="primary", elem_id="btn-start-round")
        with gr.Column(variant="panel"):
            eval_prompts = gr.Number(value=32, precision=0, minimum=1, maximum=MAX_EVAL_PROMPTS,
                                     label="Eval prompts (policy vs base)", elem_id="eval-prompts")
            eval_batch = gr.Button("Create evaluation batch", elem_id="btn-eval-batch")
        with gr.Column(variant="panel"):
            n_pairs = gr.Number(value=ctx.ws.config.sampling.pool_refill_pairs, precision=0, minimum=1,
                                maximum=MAX_PAIRS_PER_REQUEST, label="Pairs to sample", elem_id="n-pairs")
            sample = gr.Button("Sample N more pairs", elem_id="btn-sample")
    result = gr.Markdown(elem_id="sample-result")
    with gr.Accordion("Export the preference dataset", open=False, elem_id="export"):
        with gr.Row(equal_height=False):
            fmt = gr.Radio(list(FORMATS), value="hf", label="Format", elem_id="export-format",
                           info="hf: datasets.load_from_disk; jsonl / parquet: datasets.load_dataset")
            min_agreement = gr.Slider(0.0, 1.0, value=0.0, step=0.05, label="Minimum agreement",
                                      info="share of a pair's judgments that agree with its label",
                                      elem_id="export-min-agreement")
            include_ties = gr.Checkbox(value=False, label="Include ties", elem_id="export-ties")
            anonymize = gr.Checkbox(value=True, label="Anonymize annotators", elem_id="export-anonymize",
                                    info="annotator-1, annotator-2, ... instead of usernames")
            export = gr.Button("Export", elem_id="btn-export", scale=0, min_width=120)
        with gr.Row(equal_height=True):
            export_result = gr.Markdown(elem_id="export-result")
            download = gr.File(label="Download (zip)", interactive=False, elem_id="export-file", visible=False)
    with gr.Accordion("Import control pairs", open=False, elem_id="controls"):
        gr.Markdown(CONTROLS_HELP)
        with gr.Row(equal_height=True):
            controls_file = gr.File(label="Control-pair file", file_types=[".jsonl", ".csv"], type="filepath",
                                    elem_id="controls-file")
            import_button = gr.Button("Import control pairs", elem_id="btn-import-controls", scale=0, min_width=160)
        controls_result = gr.Markdown(elem_id="controls-result")
    return ActionControls(algo=algo, start_round=start, eval_prompts=eval_prompts, eval_batch=eval_batch,
                          n_pairs=n_pairs, sample=sample, result=result, fmt=fmt, min_agreement=min_agreement,
                          include_ties=include_ties, anonymize=anonymize, export=export, download=download,
                          export_result=export_result, controls_file=controls_file, import_controls=import_button,
                          controls_result=controls_result)


def wire_action_controls(ctx: OperatorContext, controls: ActionControls, summary: gr.Markdown,
                         then: Callable[[gr.events.Dependency], object]) -> None:
    """Wire the buttons; `then(dependency)` chains the live-status refresh after a queued job."""
    db, services = ctx.db, ctx.services
    staging = ExportStaging()

    def queue_round(algo_label: str, request: gr.Request) -> str:
        with ctx.checked(request) as user:
            algo = ALGORITHMS.get(algo_label)
            if algo is None:
                raise gr.Error(f"Choose one of {', '.join(ALGORITHMS)}.", print_exception=False)
            try:
                job = start_round(db, algo, requested_by=user.username)
            except ActionRefused as exc:
                return REFUSED + str(exc)
            ctx.audit(user, request, "start_round", job=job.id, algo=algo)
        return f"Queued round job **#{job.id}** ({algo_label}). Its progress shows under Live status."

    def queue_eval_batch(prompts: float | None, request: gr.Request) -> str:
        with ctx.checked(request) as user:
            try:
                job = create_eval_batch(db, int(prompts or 0))
            except ActionRefused as exc:
                return REFUSED + str(exc)
            ctx.audit(user, request, "eval_batch", job=job.id, prompts=int(prompts or 0))
        return (f"Queued evaluation batch job **#{job.id}** ({int(prompts or 0)} eval prompts). Its pairs go to "
                "annotators first; the human win rate appears under Rounds as they are judged.")

    def request_pairs(n: float | None, request: gr.Request) -> tuple[str, str]:
        user = ctx.require(request)
        if services.request_pairs is None:
            with ctx.gate:
                status = pool_status_markdown(status_counts(db))
            return ("No sampler is attached to this server (it runs without a model). "
                    "Run `rlhf sample --pairs N` instead.", status)
        count = int(n or 0)
        if not 1 <= count <= MAX_PAIRS_PER_REQUEST:
            raise gr.Error(f"Ask for between 1 and {MAX_PAIRS_PER_REQUEST} pairs.", print_exception=False)
        result = services.request_pairs(count)  # outside the gate: it may write jobs or pairs itself
        ctx.audit(user, request, "sample_pairs", pairs=count)
        done = f"Requested {count} more pairs." + (f" {plain_markdown(str(result))}" if result is not None else "")
        with ctx.gate:
            status = pool_status_markdown(status_counts(db))
        return done, status

    def export(fmt: str, min_agreement: float | None, include_ties: bool, anonymize: bool, request: gr.Request
               ) -> tuple[str, gr.File]:
        user = ctx.require(request)
        # Not under the gate: writing the dataset takes seconds and must not stall annotators; its one
        # read waits for SQLite's write lock like the worker process does.
        try:
            exported = export_dataset(ctx.ws, db, staging, fmt=fmt, min_agreement=min_agreement,
                                      include_ties=bool(include_ties), anonymize=bool(anonymize))
        except ExportError as exc:
            return f"**Nothing exported:** {exc}", gr.File(value=None, visible=False)  # our own sentence
        ctx.audit(user, request, "export", format=fmt, min_agreement=min_agreement, include_ties=bool(include_ties),
                  anonymize=bool(anonymize), rows=exported.result.n_rows)
        return export_summary(exported), gr.File(value=str(exported.zip_path), visible=True)

    def import_control_pairs(path: str | None, request: gr.Request) -> str:
        with ctx.checked(request) as user:
            if not path:
                return NOT_IMPORTED + "choose a JSONL or CSV file first."
            try:
                done = import_controls(ctx.ws, db, Path(path), imported_by=user.username)
            except ActionRefused as exc:
                return NOT_IMPORTED + plain_markdown(str(exc))
            ctx.audit(user, request, "import_controls", file=Path(path).name)
        return plain_markdown(done)

    round_event = controls.start_round.click(queue_round, inputs=[controls.algo], outputs=[controls.result],
                                             api_name="start_round", api_visibility=OPERATOR_API, queue=False)
    eval_event = controls.eval_batch.click(queue_eval_batch, inputs=[controls.eval_prompts],
                                           outputs=[controls.result], api_name="create_eval_batch",
                                           api_visibility=OPERATOR_API, queue=False)
    sample_event = controls.sample.click(request_pairs, inputs=[controls.n_pairs], outputs=[controls.result, summary],
                                         api_name="sample_pairs")
    for event in (round_event, eval_event, sample_event):
        then(event)
    controls.export.click(export, inputs=[controls.fmt, controls.min_agreement, controls.include_ties,
                                          controls.anonymize],
                          outputs=[controls.export_result, controls.download], api_name="export_dataset",
                          api_visibility=OPERATOR_API, concurrency_limit=1)
    controls.import_controls.click(import_control_pairs, inputs=[controls.controls_file],
                                   outputs=[controls.controls_result], api_name="import_controls",
                                   api_visibility=OPERATOR_API, concurrency_limit=1)
