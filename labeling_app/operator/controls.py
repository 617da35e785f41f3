"""The Actions block of the operator tab: start a round, queue an evaluation batch, sample more pairs,
export the dataset, import control pairs. Every handler checks the operator role on the server first, then calls
the action service (`rlhf_core.service`: the CLI's rules and audit) or the app's sampler and renders a sentence."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import gradio as gr

from labeling_app.operator.actions import ExportStaging, export_summary, export_zip
from labeling_app.operator.common import OPERATOR_API, OperatorContext
from labeling_app.operator.status import pool_status_markdown
from labeling_app.render import plain_markdown
from rlhf_core.loop.job_rules import MAX_EVAL_PROMPTS, MAX_SAMPLE_PAIRS, refuse_sample
from rlhf_core.registry import EXPORT_FORMATS, FILE_SUFFIXES, POLICY_ALGORITHMS, round_algorithms
from rlhf_core.service.actor import ActionRefused
from rlhf_core.service.imports import import_file
from rlhf_core.service.jobs import queue_eval_batch, start_round
from storage import status_counts

MAX_PAIRS_PER_REQUEST = MAX_SAMPLE_PAIRS
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


def round_choices() -> dict[str, str]:
    """The round picker's labels ("GRPO") and the algorithms they name, from the algorithm table."""
    return {POLICY_ALGORITHMS[name].label: name for name in round_algorithms()}


def build_action_controls(ctx: OperatorContext) -> ActionControls:
    gr.Markdown("### Actions")
    choices = round_choices()
    default_algo = next((k for k, v in choices.items() if v == ctx.ws.config.policy.algo), None)
    with gr.Row(equal_height=True):
        with gr.Column(variant="panel"):
            algo = gr.Radio(list(choices), value=default_algo, label="Policy update", elem_id="round-algo")
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
            fmt = gr.Radio(list(EXPORT_FORMATS), value="hf", label="Format", elem_id="export-format",
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
            controls_file = gr.File(label="Control-pair file", file_types=list(FILE_SUFFIXES), type="filepath",
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
            choices = round_choices()
            algo = choices.get(algo_label)
            if algo is None:
                raise gr.Error(f"Choose one of {', '.join(choices)}.", print_exception=False)
            try:
                job = start_round(ctx.ws, db, algo, ctx.actor(user, request))
            except ActionRefused as exc:
                return REFUSED + str(exc)
        return f"Queued round job **#{job.id}** ({algo_label}). Its progress shows under Live status."

    def queue_eval(prompts: float | None, request: gr.Request) -> str:
        with ctx.checked(request) as user:
            try:
                job = queue_eval_batch(ctx.ws, db, int(prompts or 0), ctx.actor(user, request))
            except ActionRefused as exc:
                return REFUSED + str(exc)
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
        if (refused := refuse_sample(ctx.ws, db, {"pairs": count})) is not None:  # the `rlhf sample` job's rule
            raise gr.Error(refused, print_exception=False)
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
            exported = export_zip(ctx.ws, db, staging, ctx.actor(user, request), fmt=fmt, min_agreement=min_agreement,
                                  include_ties=bool(include_ties), anonymize=bool(anonymize))
        except ActionRefused as exc:
            return f"**Nothing exported:** {exc}", gr.File(value=None, visible=False)  # our own sentence
        return export_summary(exported), gr.File(value=str(exported.zip_path), visible=True)

    def import_control_pairs(path: str | None, request: gr.Request) -> str:
        with ctx.checked(request) as user:
            if not path:
                return NOT_IMPORTED + "choose a JSONL or CSV file first."
            try:
                done = import_file(ctx.ws, db, "controls", path, ctx.actor(user, request), source=Path(path).name,
                                   shown_name=Path(path).name)
            except ActionRefused as exc:
                return NOT_IMPORTED + plain_markdown(str(exc))
        return plain_markdown(done.summary)

    round_event = controls.start_round.click(queue_round, inputs=[controls.algo], outputs=[controls.result],
                                             api_name="start_round", api_visibility=OPERATOR_API, queue=False)
    eval_event = controls.eval_batch.click(queue_eval, inputs=[controls.eval_prompts],
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
