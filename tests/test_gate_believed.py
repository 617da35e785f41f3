"""The policy gate counts the labels CrowdBT believes: `believed_signs` against hand-computed weights, and on
simulated crowds (features of noise or with a real preference; a left-clicker and a coin-flipper among the
annotators; reliability from the cross-fitted pilot): the gate still opens falsely at most 5% of the time on
labels with no signal, and opens on a real preference that the raw labels of a bad crowd hide."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import storage
from rlhf_core.algorithms.evidence import accuracy_of, cross_fitted_margins, fold_of
from rlhf_core.loop import evidence as loop_evidence
from rlhf_core.loop.rounds import policy_gate
from rlhf_core.simulator.simulate import simulate_annotators
from rlhf_core.training.crowd_weights import Reliability, believed, believed_signs, reliability_from_features
from rlhf_core.training.reward_data import PreferenceExample
from rlhf_core.workspace import init_workspace
from storage import RewardModelVersion

RELIABILITY = {"honest": Reliability(0.9, 0.05, 100, 0), "left": Reliability(0.9, 0.95, 100, 0),
               "coin": Reliability(0.55, 0.05, 100, 0), "contrary": Reliability(0.1, 0.05, 100, 0)}


def _example(annotator: str | None, chosen_left: bool, i: int = 0, tie: bool = False) -> PreferenceExample:
    return PreferenceExample(prompt_messages=[], chosen=str(i), rejected="-", strength=None, prompt_id=i // 2,
                             tie=tie, annotator=annotator, chosen_left=chosen_left)


def test_believed_signs_against_hand_computed_weights() -> None:
    # Relative weight (1 − λ)(2η − 1) / (1 − λ + 2λℓ) / 0.8 (a trusted new annotator's: η 0.9, λ 0.1, a right pick):
    # honest right 1.0, honest left 0.90, left-clicker's left 0.026, its right 1.0, coin-flipper 0.125,
    # contrary −1.0, unknown (the prior) right 1.0: kept at 0.5 and above, turned around below −0.5.
    examples = [_example("honest", False), _example("honest", True), _example("left", True),
                _example("left", False), _example("coin", False), _example("contrary", False),
                _example("someone new", False), _example(None, True), _example("left", True, tie=True)]
    examples += [_example("honest", False) for _ in range(4)]  # 8 or more kept: no fallback
    assert believed_signs(examples, RELIABILITY) == [1, 1, 0, 1, 0, -1, 1, 1, 1, 1, 1, 1, 1]
    kept = believed(examples, RELIABILITY)
    assert len(kept) == 11 and (kept[3].chosen, kept[3].rejected) == ("-", "0")  # the contrary pick turned around


def test_believed_signs_count_every_judgment_when_too_few_are_believed() -> None:
    examples = [_example("left", True), _example("coin", False), _example("contrary", False)]
    assert believed_signs(examples, RELIABILITY) == [1, 1, -1]  # as held-out figures: below MIN_HELDOUT, all count


def _crowd(gen: torch.Generator, signal: bool) -> tuple[torch.Tensor, list[PreferenceExample]]:
    """120 pairs judged once each by 3 honest annotators (following feature 0 90% of the time where `signal`, else
    coin flips), a left-clicker (the left side, 95% of the time) and a coin-flipper: differences picked − other."""
    x = torch.randn(240, 32, generator=gen, dtype=torch.float64)
    names = ["honest-1", "honest-2", "honest-3", "left", "coin"] * 48
    rows, examples = [], []
    for i, name in enumerate(names):
        a_left = bool(torch.rand(1, generator=gen) < 0.5)  # which of the pair was shown on the left
        better_a = bool(x[i, 0] > 0) if signal else bool(torch.rand(1, generator=gen) < 0.5)
        if name.startswith("honest"):
            picks_a = better_a == bool(torch.rand(1, generator=gen) < 0.9)
        elif name == "left":
            picks_a = a_left == bool(torch.rand(1, generator=gen) < 0.95)
        else:
            picks_a = bool(torch.rand(1, generator=gen) < 0.5)
        rows.append(x[i] if picks_a else -x[i])
        examples.append(_example(name, picks_a == a_left, i))
    return torch.stack(rows), examples


def _gate_accuracy(diff: torch.Tensor, examples: list[PreferenceExample], seed: int, believe: bool
                   ) -> tuple[bool, float]:
    if believe:
        halves = torch.tensor([e.prompt_id % 2 for e in examples], dtype=torch.long)
        x = diff / diff.std(dim=0).clamp(min=1e-6)
        reliability = reliability_from_features(x, halves, [e.annotator for e in examples],
                                                [bool(e.chosen_left) for e in examples], [])
        signs = believed_signs(examples, reliability)
        rows = [i for i, s in enumerate(signs) if s]
        diff = torch.stack([diff[i] * signs[i] for i in rows])
        examples = [examples[i] for i in rows]
    accuracy = accuracy_of(cross_fitted_margins(diff / diff.std(dim=0).clamp(min=1e-6),
                                                fold_of([e.prompt_id for e in examples], 5, seed=seed), 0.1))
    rm = RewardModelVersion(id=1, adapter_path="-", metrics_json=json.dumps(
        {"crossfit": {"right": accuracy.right, "n": accuracy.n, "believed": believe}}))
    return policy_gate(rm, 0.5).open, accuracy.value


@pytest.mark.slow  # 100 pilots of CrowdBT: about 90 s
def test_counting_believed_labels_keeps_the_false_open_rate_at_most_5_percent() -> None:
    gen = torch.Generator().manual_seed(2)
    trials = 100  # measured over 300 other trials: 0.7% (2.7% before the 1/3 weight; raw labels: 0%)
    opens = sum(_gate_accuracy(*_crowd(gen, signal=False), seed=t, believe=True)[0] for t in range(trials))
    assert opens / trials <= 0.05, f"false-open rate {opens / trials:.1%}"


def test_believed_labels_let_a_real_preference_through_a_bad_crowd() -> None:
    gen = torch.Generator().manual_seed(3)
    raw, believed_ = [], []
    for t in range(6):
        diff, examples = _crowd(gen, signal=True)
        raw.append(_gate_accuracy(diff, examples, seed=t, believe=False))
        believed_.append(_gate_accuracy(diff, examples, seed=t, believe=True))
    assert sum(a for _, a in believed_) / 6 > sum(a for _, a in raw) / 6 + 0.1
    assert sum(o for o, _ in believed_) >= 5 and sum(o for o, _ in believed_) > sum(o for o, _ in raw)


@pytest.mark.parametrize("annotator_model", ["crowd_bt", "none"])
def test_fresh_accuracy_counts_the_labels_crowd_bt_believes(tmp_path: Path, monkeypatch, annotator_model: str
                                                            ) -> None:  # noqa: ANN001
    """A reward model that prefers the longer answer, judged afterwards by an honest annotator and a left-clicker
    (the gold: longer). With CrowdBT and the reliability the reward model stored, the left-clicker's clicks (all
    on the left side: weight 0.026) are left out and fresh accuracy is the honest annotator's agreement, 1.0;
    counting every label, the left-clicker's coin-flip agreement pulls it down."""
    ws, _ = init_workspace(tmp_path / "ws")
    ws.config.reward.annotator_model = annotator_model
    db = ws.database()
    rm = storage.add_reward_model_version(db, adapter_path="-", trained_on=0, heldout_accuracy=None,
                                          heldout_loss=None, metrics={"annotators": {
                                              "sim-honest-1": {"eta": 0.9, "left_bias": 0.05},
                                              "sim-left-1": {"eta": 0.9, "left_bias": 0.95}}})
    storage.add_prompts(db, [[{"role": "user", "content": f"question {i}"}] for i in range(40)])
    for i, prompt in enumerate(storage.list_prompts(db)):
        storage.record_generations(db, prompt_id=prompt.id, policy_version_id=0, gen_params={}, pairs=[(0, 1)],
                                   responses=[("short" if i % 2 else "a much longer answer", 1),
                                              ("a much longer answer" if i % 2 else "short", 1)])
    simulate_annotators(db, judgments=80, gold="longer", crowd="honest:1,left:1", seed=0, progress=False)
    monkeypatch.setattr(loop_evidence, "encode_pairs", lambda tokenizer, examples, max_length: examples)
    monkeypatch.setattr(loop_evidence, "score_pairs", lambda stack, examples, batch_size: (  # longer is better
        torch.tensor([[float(len(e.chosen))] for e in examples]),
        torch.tensor([[float(len(e.rejected))] for e in examples])))
    fresh, on_base = loop_evidence.fresh_accuracy(ws, db, SimpleNamespace(tokenizer=None), rm, SimpleNamespace(id=0))
    judged = [r for r in storage.judgment_rows(db) if r.choice in ("a", "b")]
    honest = [r for r in judged if r.annotator == "sim-honest-1"]
    if annotator_model == "crowd_bt":
        assert (fresh.right, fresh.n) == (len(honest), len(honest)) and on_base.n == fresh.n
    else:
        assert fresh.n == len(judged) > len(honest) and fresh.value < 0.9
