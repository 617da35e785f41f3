"""Simulated step labels: a scripted "true" correctness of each step (the step golds of
`rlhf_core.registry.STEP_GOLDS`), arithmetic problems with worked chains that are right or wrong step by step, and
simulated annotators that label sampled responses through the same storage path as people (`simulate_step_labels`,
`rlhf simulate-steps`).

The arithmetic gold reads every `a op b = c` (numbers joined by + - * / x ×) in a step and checks it: a step with
a wrong one is bad, a step whose equations are all right is good, a step with none is neutral. It judges each step
on its own: a step that computes correctly from an earlier wrong result is good (the error was that earlier step).
"""

from __future__ import annotations

import ast
import operator
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from rlhf_core.config import Config
from rlhf_core.data.steps import check_step_labels, split_steps
from rlhf_core.registry import STEP_GOLDS, resolve
from rlhf_core.simulator.simulate import SimulationError, ensure_sim_annotators
from storage import Database, next_step_task, record_step_labels, skip_step_task

NUMBER = r"-?\d+(?:\.\d+)?"
EQUATION = re.compile(rf"({NUMBER}(?:\s*[-+*/x×]\s*{NUMBER})+)\s*=\s*({NUMBER})")
_OPERATORS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}
OPS = {"+": operator.add, "-": operator.sub, "*": operator.mul}
SIM_STEPS_PREFIX = "sim-steps-"


def _value(node: ast.AST) -> float:
    """The value of a parsed arithmetic expression of numbers and + - * / (no names, no calls)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
        return float(node.value)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return -_value(node.operand)
    if isinstance(node, ast.BinOp) and type(node.op) in _OPERATORS:
        return _OPERATORS[type(node.op)](_value(node.left), _value(node.right))
    raise ValueError("not plain arithmetic")


def equation_checks(step: str) -> list[bool]:
    """For each `expression = number` in `step`, whether it is right (to 1e-6)."""
    checks = []
    for left, right in EQUATION.findall(step):
        try:
            value = _value(ast.parse(left.replace("×", "*").replace("x", "*"), mode="eval").body)
        except (ValueError, SyntaxError, ZeroDivisionError):
            continue
        checks.append(abs(value - float(right)) < 1e-6)
    return checks


def arithmetic_step_labels(prompt_messages: list[dict[str, str]], steps: Sequence[str]) -> list[str]:
    """The arithmetic gold: each step "bad" (a wrong equation), "good" (its equations right) or "neutral" (none)."""
    labels = []
    for step in steps:
        checks = equation_checks(step)
        labels.append("neutral" if not checks else "good" if all(checks) else "bad")
    return labels


@dataclass(frozen=True)
class ArithmeticProblem:
    """A chain of operations on small numbers: the question, its answer and the right steps."""

    question: str
    answer: int
    operands: tuple[int, ...]
    operators: tuple[str, ...]


def arithmetic_problem(rng: random.Random, n_ops: int = 3) -> ArithmeticProblem:
    """A left-to-right chain such as "Start at 12, add 7, multiply by 3, subtract 5" with small numbers."""
    operands = [rng.randint(2, 20)]
    operators_, words = [], []
    for _ in range(n_ops):
        op = rng.choice("+-*")
        number = rng.randint(2, 5) if op == "*" else rng.randint(2, 20)
        operators_.append(op)
        operands.append(number)
        words.append({"+": f"add {number}", "-": f"subtract {number}", "*": f"multiply by {number}"}[op])
    value = operands[0]
    for op, number in zip(operators_, operands[1:]):
        value = OPS[op](value, number)
    question = (f"Start at {operands[0]}, then {', then '.join(words)}. Work it out one operation per line, as "
                "`a + b = c`, and end with `Answer: N`.")
    return ArithmeticProblem(question, value, tuple(operands), tuple(operators_))


def worked_chain(problem: ArithmeticProblem, rng: random.Random, error_rate: float) -> list[str]:
    """A worked answer to `problem`, one step per operation then "Answer: N": each result is off by 1 to 9 with
    probability `error_rate`, and the next step carries on from the stated (possibly wrong) result."""
    value, steps = problem.operands[0], []
    for op, number in zip(problem.operators, problem.operands[1:]):
        result = OPS[op](value, number)
        if rng.random() < error_rate:
            result += rng.choice([-1, 1]) * rng.randint(1, 9)
        steps.append(f"{value} {op} {number} = {result}")
        value = result
    return [*steps, f"Answer: {value}"]


def step_gold(name: str):  # noqa: ANN201 - (prompt_messages, steps) -> labels
    """The label function of step gold `name` (UnknownKind listing the known ones)."""
    entry = STEP_GOLDS.require(name)
    return resolve(entry.label) if isinstance(entry.label, str) else entry.label


@dataclass
class StepSimulationResult:
    labels: int = 0
    steps: int = 0
    bad: int = 0
    flipped: int = 0
    per_annotator: dict[str, int] = field(default_factory=dict)
    stopped: str = "target reached"


def simulate_step_labels(db: Database, config: Config, *, labels: int, annotators: int = 2, gold: str = "arithmetic",
                         noise: float = 0.0, seed: int = 0) -> StepSimulationResult:
    """Have `annotators` simulated users (sim-steps-1..K) label the steps of up to `labels` responses, taking turns,
    through `next_step_task` and `record_step_labels` as the labeling page does: the response cut by
    `config.labeling`'s splitter, each step labeled by the step gold, a label replaced by another at random with
    probability `noise`. Responses of `labeling.step_sets` (every train prompt with `labeling.mode = "steps"`)."""
    if annotators < 1 or labels < 0 or not 0.0 <= noise <= 1.0:
        raise SimulationError("need at least one annotator, labels >= 0 and noise in [0, 1]")
    label_steps = step_gold(gold)
    lab = config.labeling
    sources = None if lab.mode == "steps" else list(lab.step_sets)
    if sources == []:
        raise SimulationError("no responses are step tasks: set labeling.mode = \"steps\" or name prompt sets in "
                              "labeling.step_sets")
    users = ensure_sim_annotators(db, [f"{SIM_STEPS_PREFIX}{i}" for i in range(1, annotators + 1)])
    rng = random.Random(f"{seed}-step-noise")
    result = StepSimulationResult(per_annotator={name: 0 for _, name in users})
    rotation, turn = list(users), 0
    while result.labels < labels:
        if not rotation:
            result.stopped = "no responses left"
            break
        turn %= len(rotation)
        user_id, name = rotation[turn]
        task = next_step_task(db, user_id, sources=sources, wanted=lab.step_labels_per_response,
                              lease_seconds=lab.lease_seconds)
        if task is None:
            rotation.pop(turn)
            continue
        steps = split_steps(task.text, lab.step_split, lab.step_separator, lab.max_steps)
        if not steps:  # only whitespace: nothing to label
            skip_step_task(db, user_id, task.sample_id)
            continue
        truth = label_steps(task.prompt_messages, steps)
        given = [rng.choice([x for x in ("good", "neutral", "bad") if x != t]) if rng.random() < noise else t
                 for t in truth]
        record_step_labels(db, user_id, task.sample_id, steps=steps, labels=check_step_labels(given, len(steps)),
                           actor=name)
        result.labels += 1
        result.steps += len(steps)
        result.bad += given.count("bad")
        result.flipped += sum(g != t for g, t in zip(given, truth))
        result.per_annotator[name] += 1
        turn += 1
    return result
