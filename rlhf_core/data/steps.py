"""Steps of a response and their labels, no model needed: the step splitters of `rlhf_core.registry.STEP_SPLITTERS`
(by lines, by numbered steps, by a separator), `split_steps` (the cut every reader of steps uses, capped at a
number of steps), and the rules of a set of step labels (`check_step_labels`, `labels_for_first_wrong`).

A step label is "good", "neutral" or "bad" (PRM800K's three ratings), or None for a step after the first wrong one
when the annotator marked only that (nothing is claimed about what follows an error).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from rlhf_core.registry import STEP_SPLITTERS, resolve

STEP_LABELS = ("good", "neutral", "bad")
# Where a numbered step starts: "1.", "2)", "3:", "Step 4", "step 5:" at the start of a line (leading spaces allowed).
NUMBERED = re.compile(r"^[ \t]*(?:step[ \t]*\d+\b[.:)]?|\d+[.:)])(?=\s|$)", re.IGNORECASE | re.MULTILINE)


class StepLabelError(ValueError):
    """Step labels that do not fit the response's steps; the message is one sentence for the annotator."""


def split_lines(text: str, separator: str = "") -> list[str]:
    """Each non-empty line (without its surrounding spaces) is a step."""
    return [line.strip() for line in text.splitlines() if line.strip()]


def split_numbered(text: str, separator: str = "") -> list[str]:
    """A step starts at each numbered line ("1.", "2)", "Step 3:"); text before the first number is a step of its
    own; a text without numbers is one step."""
    starts = [m.start() for m in NUMBERED.finditer(text)]
    if not starts or starts[0] != 0:
        starts = [0, *starts]
    bounds = [*starts, len(text)]
    return [part for a, b in zip(bounds, bounds[1:]) if (part := text[a:b].strip())]


def split_separator(text: str, separator: str = "") -> list[str]:
    """Steps are the non-empty pieces between occurrences of `separator` (e.g. "\\n\\n" for paragraphs)."""
    if not separator:
        raise ValueError("labeling.step_split = \"separator\" needs labeling.step_separator (e.g. \"\\n\\n\")")
    return [part.strip() for part in text.split(separator) if part.strip()]


def split_steps(text: str, how: str = "lines", separator: str = "", max_steps: int = 12) -> list[str]:
    """The steps of a response by splitter `how` (a STEP_SPLITTERS name), at most `max_steps`: the steps past the
    cap are joined to the last one by newlines, so no text is lost and the labeling page has a bounded number of
    rows. An empty response has no steps."""
    if max_steps < 1:
        raise ValueError(f"max_steps must be at least 1, got {max_steps}")
    steps = resolve(STEP_SPLITTERS.require(how).split)(text, separator)
    if len(steps) > max_steps:
        steps = [*steps[:max_steps - 1], "\n".join(steps[max_steps - 1:])]
    return steps


def labels_for_first_wrong(n_steps: int, first_wrong: int | None) -> list[str | None]:
    """The labels "the first wrong step is number `first_wrong`" (1-based) says: the steps before it good, it bad,
    the ones after it unlabeled (None); `first_wrong` None or 0: every step good."""
    if not first_wrong:
        return ["good"] * n_steps
    if not 1 <= first_wrong <= n_steps:
        raise StepLabelError(f"Not saved: step {first_wrong} does not exist; this response has {n_steps} steps.")
    return ["good"] * (first_wrong - 1) + ["bad"] + [None] * (n_steps - first_wrong)


def check_step_labels(labels: Sequence[str | None], n_steps: int) -> list[str | None]:
    """`labels` as stored, or StepLabelError: one per step, each good, neutral or bad; only the steps after a bad
    one may be left unlabeled (marking the first wrong step), and at least one step is labeled."""
    labels = [None if label in (None, "") else str(label) for label in labels]
    if len(labels) != n_steps:
        raise StepLabelError(f"Not saved: {len(labels)} labels for {n_steps} steps. Reload the page.")
    if bad := [label for label in labels if label is not None and label not in STEP_LABELS]:
        raise StepLabelError(f"Not saved: {bad[0]!r} is not a step label; use good, neutral or bad.")
    first_bad = next((i for i, label in enumerate(labels) if label == "bad"), n_steps)
    unlabeled = [i + 1 for i, label in enumerate(labels[:first_bad]) if label is None]
    if unlabeled:
        return _missing(unlabeled)
    return labels


def _missing(steps: list[int]) -> list[str | None]:
    which = f"step {steps[0]}" if len(steps) == 1 else f"steps {', '.join(map(str, steps[:-1]))} and {steps[-1]}"
    raise StepLabelError(f"Not saved: {which} {'has' if len(steps) == 1 else 'have'} no label. Mark each step good, "
                         "neutral or bad, or mark the first wrong step.")
