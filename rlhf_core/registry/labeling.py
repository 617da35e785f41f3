"""How people label, and how a response is cut into steps. One table each; `labeling.mode` and `labeling.step_split`
(the configuration's checks and reference), the labeling app (which page each mode adds) and the docs read them.

- A labeling mode's `page` is "module:function", `build(page, ws, db)`: it lays out that mode's view beside the
  annotator page and wires its events (`labeling_app.modes`); None for "pairs", which is the annotator page itself.
  `prompt_level`: the mode can be set for a prompt set (`labeling.step_sets`) as well as for the workspace.
- A step splitter's `split(text, separator) -> list[str]` cuts a response into its steps (`rlhf_core.data.steps`);
  the same cut serves the labeling page, the stored labels, the export, the process reward model's training and its
  scores, so a step label and a step score always mean the same span of text.
"""

from __future__ import annotations

from dataclasses import dataclass

from rlhf_core.registry.base import Registry


@dataclass(frozen=True)
class LabelingMode:
    name: str
    help: str
    page: str | None  # "module:function" that builds its view (see the module docstring); None: the pair page
    prompt_level: bool = False


LABELING_MODES: Registry[LabelingMode] = Registry("labeling mode", [
    LabelingMode("pairs", "two responses side by side: which is better (the reward model's judgments)", None),
    LabelingMode("steps", "one response cut into steps: each step good, neutral or bad, or the first wrong step "
                          "(the process reward model's labels)", "labeling_app.steps:build_step_view",
                 prompt_level=True),
])


@dataclass(frozen=True)
class StepSplitter:
    name: str
    help: str
    split: str  # "module:function" (see the module docstring)


STEP_SPLITTERS: Registry[StepSplitter] = Registry("step splitter", [
    StepSplitter("lines", "each non-empty line is a step", "rlhf_core.data.steps:split_lines"),
    StepSplitter("numbered", "a step starts at each numbered line (\"1.\", \"2)\", \"Step 3:\"); text before the "
                             "first number is a step of its own", "rlhf_core.data.steps:split_numbered"),
    StepSplitter("separator", "steps are separated by `labeling.step_separator`",
                 "rlhf_core.data.steps:split_separator"),
])
