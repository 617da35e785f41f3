"""The operator tab's read-only sections (live status, quality, rounds) and how they refresh.

A full refresh (tab opened, Refresh clicked) sends everything. The timer's refresh sends only what
changed, so charts do not redraw every few seconds: quality is recomputed when the judgment count
(the number of control pairs, or the reward model) moved, rounds when a version or a job's status did, pairs by
selection when the pair or judgment count did, and each output is compared with what this
browser session was last sent (`memo`, kept in a `gr.State`).
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass
from typing import Any

import gradio as gr
import pandas as pd

from labeling_app.operator.quality import QualitySection, quality_values
from labeling_app.operator.rounds import RoundsSection, curve_values, rounds_values, selection_values
from labeling_app.operator.status import StatusSection, status_values
from rlhf_core.service.dashboard import annotation_quality, live_status, policy_gate_note, rounds_table
from storage import Database, count_control_pairs


def _is_skip(value: Any) -> bool:
    return isinstance(value, dict) and value == gr.skip()


def _jsonable(value: Any) -> Any:
    if isinstance(value, pd.DataFrame):
        return value.to_dict(orient="split")
    return str(value)


def signature(value: Any) -> str:
    """A digest of an output value (plain value, DataFrame, or a component used as an update)."""
    if isinstance(value, gr.components.Component):
        args = getattr(value, "_constructor_args", None)
        if not args:
            return uuid.uuid4().hex  # cannot tell: treat as changed
        value = args[0]
    return hashlib.sha1(json.dumps(value, default=_jsonable, sort_keys=True).encode()).hexdigest()


@dataclass
class Dashboard:
    status: StatusSection
    quality: QualitySection
    rounds: RoundsSection
    min_accuracy: float = 0.0  # reward.min_annotator_accuracy, to say whose judgments training leaves out

    @property
    def outputs(self) -> list[gr.components.Component]:
        return [*self.status.outputs, *self.quality.outputs, *self.rounds.outputs]

    def values(self, db: Database, selected_job: int | None, memo: dict[str, Any] | None = None
               ) -> tuple[list[Any], dict[str, Any]]:
        """Values for `outputs` and the new memo. Without `memo`, everything; with it, unchanged
        outputs are `gr.skip()`. The caller holds the gate and has checked the operator."""
        full = not memo
        memo = {"sent": {}} if full else {**memo, "sent": dict(memo.get("sent", {}))}
        info = live_status(db)
        values = status_values(info)

        # A new reward model brings new CrowdBT estimates of the annotators.
        quality_key = [info["counts"]["judgments"], count_control_pairs(db), info["versions"]["reward_model"]]
        if full or memo.get("quality_key") != quality_key:
            values += quality_values(annotation_quality(db), self.min_accuracy)
        else:
            values += [gr.skip()] * len(self.quality.outputs)

        rounds_key = json.dumps([info["versions"], [(j["id"], j["status"]) for j in info["recent_jobs"]]])
        if full or memo.get("rounds_key") != rounds_key:
            values += rounds_values(rounds_table(db), policy_gate_note(db)) + curve_values(db, selected_job)
        else:
            values += [gr.skip()] * (len(self.rounds.outputs) - len(self.rounds.selection_outputs))
        selection_key = [info["counts"]["pairs"], info["counts"]["judgments"]]
        if full or memo.get("selection_key") != selection_key:
            values += selection_values(db)
        else:
            values += [gr.skip()] * len(self.rounds.selection_outputs)
        memo.update(quality_key=quality_key, rounds_key=rounds_key, selection_key=selection_key)

        sent = memo["sent"]
        for index, value in enumerate(values):
            if _is_skip(value):
                continue
            digest = signature(value)
            if not full and sent.get(str(index)) == digest:
                values[index] = gr.skip()
            sent[str(index)] = digest
        return values, memo

