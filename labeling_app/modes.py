"""The labeling modes a workspace uses (`rlhf_core.registry.LABELING_MODES`): "pairs" is the annotator page itself;
each other mode in use (`labeling.mode`, or a prompt-level mode named for prompt sets, as `labeling.step_sets` does
for "steps") builds its own view beside it, through its entry's `page`."""

from __future__ import annotations

import gradio as gr

from labeling_app.annotator_page import AnnotatorPage
from rlhf_core.config import LabelingConfig
from rlhf_core.registry import LABELING_MODES, resolve
from rlhf_core.workspace import Workspace
from storage import Database


def modes_in_use(labeling: LabelingConfig) -> list[str]:
    """The modes this configuration asks for, in the table's order: its `mode`, and "steps" for `step_sets`."""
    wanted = {labeling.mode, "pairs"} | ({"steps"} if labeling.step_sets else set())
    return [name for name in LABELING_MODES if name in wanted]


def build_labeling_modes(page: AnnotatorPage, ws: Workspace, db: Database, demo: gr.Blocks) -> None:
    """Build the view of every mode in use besides the pair page (inside `demo`'s layout)."""
    for name in modes_in_use(ws.config.labeling):
        if (builder := LABELING_MODES[name].page) is not None:
            resolve(builder)(page, ws, db, demo)
