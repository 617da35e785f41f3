"""The operator tab's "Reward functions" panel: the configured `[[reward.functions]]` (name, kind or function,
weight, prompt column), loop.mode and reward.combine, and each reward component's curve: its mean per policy step
of the newest training job that logged components, and per policy version (the learned reward model's too when it
is combined with functions). Values come from `rlhf_core.service.reward_components`; operator-only on the server,
like every event of the tab."""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr
import pandas as pd

from labeling_app.operator.common import OPERATOR_API, PRIVATE, OperatorContext
from labeling_app.operator.rounds import NOMINAL_STEPS
from rlhf_core.service.reward_components import RewardComponents, reward_components

FUNCTION_COLUMNS = ["name", "kind or function", "weight", "prompt column"]
NONE_CONFIGURED = ("No reward functions: the reward model alone scores policy updates. Add `[[reward.functions]]` "
                   "entries to rlhf.toml (and try them with `rlhf rewards check`).")


@dataclass
class RewardsPanel:
    panel: gr.Accordion
    summary: gr.Markdown
    functions: gr.Dataframe
    steps: gr.LinePlot
    versions: gr.LinePlot
    refresh: gr.Button

    @property
    def outputs(self) -> list[gr.components.Component]:
        return [self.summary, self.functions, self.steps, self.versions]


def panel_values(found: RewardComponents) -> list[object]:
    """Values for `RewardsPanel.outputs`; a curve shows once it has two points."""
    if not found.functions:
        summary = NONE_CONFIGURED
    else:
        summary = (f"loop.mode = `{found.mode}`, reward.combine = `{found.combine}`. "
                   + (f"Per-step curves: training job #{found.job_id}." if found.job_id is not None
                      else "No policy update has logged reward components yet."))
    steps = pd.DataFrame(found.steps, columns=["step", "component", "mean"])
    step_order = None
    if steps["step"].nunique() <= NOMINAL_STEPS:  # one labelled tick per step, as the training curves have
        steps["step"] = steps["step"].astype(str)
        step_order = list(dict.fromkeys(steps["step"])) or None
    versions = pd.DataFrame(found.versions, columns=["version", "component", "mean"])
    return [summary, gr.Dataframe(value=found.functions, visible=bool(found.functions)),
            gr.LinePlot(value=steps, visible=steps["step"].nunique() >= 2, sort=step_order),
            gr.LinePlot(value=versions, visible=versions["version"].nunique() >= 2,
                        sort=list(dict.fromkeys(versions["version"])) or None)]


def build_rewards_panel() -> RewardsPanel:
    with gr.Accordion("Reward functions", open=False, elem_id="reward-functions") as panel:
        summary = gr.Markdown(elem_id="reward-functions-summary")
        functions = gr.Dataframe(headers=FUNCTION_COLUMNS, interactive=False, label="Configured reward functions",
                                 elem_id="reward-functions-table", visible=False)
        with gr.Row(equal_height=True):
            steps = gr.LinePlot(x="step", y="mean", color="component", title="reward components per policy step",
                                y_title="mean score", height=240, visible=False, elem_id="reward-components-steps")
            versions = gr.LinePlot(x="version", y="mean", color="component",
                                   title="reward components per policy version", y_title="mean score", height=240,
                                   visible=False, elem_id="reward-components-versions")
        refresh = gr.Button("Refresh", size="sm", elem_id="btn-reward-functions-refresh")
    return RewardsPanel(panel=panel, summary=summary, functions=functions, steps=steps, versions=versions,
                        refresh=refresh)


def wire_rewards_panel(ctx: OperatorContext, panel: RewardsPanel) -> None:
    def reward_functions_overview(request: gr.Request) -> list[object]:
        with ctx.checked(request):
            return panel_values(reward_components(ctx.ws, ctx.db))

    panel.panel.expand(reward_functions_overview, outputs=panel.outputs, **PRIVATE)
    panel.refresh.click(reward_functions_overview, outputs=panel.outputs, api_name="reward_functions",
                        api_visibility=OPERATOR_API, queue=False)
