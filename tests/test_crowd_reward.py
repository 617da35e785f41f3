"""CrowdBT in reward-model training (`reward.annotator_model = "crowd_bt"`, training/annotators/crowd_weights.py):
judgment weights by hand, reliability from fixed reward differences and control pairs, and a crowd with an
adversarial and a left-clicking annotator on the tiny model: crowd_bt tells them apart, stores η and λ with
the version, and learns the preference that plain Bradley-Terry on the same judgments loses."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
from test_cli import rlhf
from test_reward_training import CPU, MARKER, WORDS, synthetic_examples

from rlhf_core.algorithms.crowd_bt import fit_crowd_bt_linear
from rlhf_core.models.stack import ModelStack
from rlhf_core.simulator.simulate import simulate_annotators
from rlhf_core.training.crowd_weights import (
    PRIOR,
    PRIOR_RELIABILITY,
    KnownJudgment,
    Reliability,
    crowd_weighted,
    fit_on_differences,
    out_of_half_differences,
    stored_reliability,
)
from rlhf_core.training.reward_data import PreferenceExample
from rlhf_core.training.reward_model import evaluate_reward_model
from rlhf_core.training.reward_service import run_reward_training
from rlhf_core.workspace import init_workspace
from storage import add_prompts, current_reward_model, list_prompts, record_generations

Q = [{"role": "user", "content": "q"}]


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def example(annotator: str | None, chosen_left: bool, *, chosen: str = "good", tie: bool = False
            ) -> PreferenceExample:
    return PreferenceExample(Q, chosen, "bad", None, 1, tie=tie, annotator=annotator, chosen_left=chosen_left)


def test_judgment_weights_by_hand():
    reliability = {"honest": Reliability(0.85, 0.0), "liar": Reliability(0.15, 0.0),
                   "lefty": Reliability(0.9, 0.8), "coin": Reliability(0.51, 0.0)}
    examples = [example("honest", True), example("liar", False), example("lefty", True), example("lefty", False),
                example("coin", True), example("newcomer", True), example(None, True),
                example("honest", True, tie=True)]
    out = crowd_weighted(examples, reliability, min_weight=0.05)
    # A trusted newcomer (η 0.9, λ 0.1) picking the left side weighs 0.9·0.8/1.1 = 0.6545: the unit is a right
    # pick's 0.8. honest: 0.7/0.8; liar: −0.7/0.8, turned around; lefty left: 0.2·0.8/(0.2 + 1.6)/0.8, right:
    # 0.8/0.8; coin: 0.02/0.8 < 0.05, left out; newcomer: 0.6545/0.8; no annotator and ties: unchanged.
    assert [round(e.weight, 4) for e in out] == [0.875, 0.875, round(0.2 / 1.8, 4), 1.0, 0.8182, 1.0, 1.0]
    assert (out[1].chosen, out[1].rejected, out[1].chosen_left) == ("bad", "good", True)  # the liar's, turned
    assert [e.annotator for e in out] == ["honest", "liar", "lefty", "lefty", "newcomer", None, "honest"]
    assert out[-1].tie and out[0].chosen == "good"
    assert (PRIOR_RELIABILITY.eta, PRIOR_RELIABILITY.left_bias) == pytest.approx((0.9, 0.1))


def test_reliability_from_fixed_differences_and_controls():
    # honest agrees with clear reward differences, liar disagrees; "checked" only judged control pairs.
    names = ["honest"] * 20 + ["liar"] * 20
    diffs = torch.tensor([4.0] * 18 + [-4.0] * 2 + [-4.0] * 18 + [4.0] * 2)
    fitted = fit_on_differences(names, diffs, [i % 2 == 0 for i in range(40)],
                                [KnownJudgment("checked", i < 8, False) for i in range(10)])
    # With |d| = 4 a pick is followed or flipped at 98%: η ≈ (18 + 9)/(20 + 10) = 0.9 and (2 + 9)/30 = 0.37
    # (the prior's 10 trusting judgments still weigh against 20).
    assert (fitted["honest"].eta, fitted["liar"].eta) == pytest.approx((0.9, 11 / 30), abs=0.02)
    assert (fitted["honest"].judgments, fitted["checked"].control_judgments) == (20, 10)
    assert fitted["checked"].eta == pytest.approx(17 / 20, abs=1e-4)  # (8 + 9) / (10 + 10)


def test_the_pilot_fits_each_half_in_its_rows_span_exactly():
    """out_of_half_differences fits on the training rows' coordinates in their span: the same predictions for
    the other half as a fit on all F features (an L2-penalized linear fit lives in that span)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(60, 300, generator=g, dtype=torch.float64)
    annotator, left = torch.randint(0, 3, (60,), generator=g), torch.randint(0, 2, (60,), generator=g).double()
    folds = torch.arange(60) % 2
    spanned = out_of_half_differences(x, folds, annotator, left, 3, 0.01)
    full = torch.zeros(60, dtype=torch.float64)
    for fold in (0, 1):
        fit = folds != fold
        theta, _, _ = fit_crowd_bt_linear(x[fit], annotator[fit], left[fit], 3, l2=0.01, prior=PRIOR, iterations=10)
        full[~fit] = x[~fit] @ theta
    assert torch.allclose(spanned, full, atol=2e-3) and float(full.abs().mean()) > 0.3


def marker_gold(prompt_messages, text: str) -> float:  # noqa: ANN001
    return float(MARKER in text.split())


def crowd_workspace(tmp_path: Path, annotator_model: str):  # noqa: ANN201
    ws, _ = init_workspace(tmp_path / annotator_model)
    cfg = ws.config.reward
    cfg.learning_rate, cfg.epochs, cfg.batch_size, cfg.max_length, cfg.eval_fraction = 1e-3, 4, 8, 128, 0.25
    cfg.annotator_model = annotator_model
    db = ws.database()
    rng = random.Random(1)
    add_prompts(db, [[{"role": "user", "content": f"question number {i}"}] for i in range(40)])
    for prompt in list_prompts(db):
        good = " ".join(rng.choice(WORDS) for _ in range(6)) + f" {MARKER}"
        bad = " ".join(rng.choice(WORDS) for _ in range(7))
        record_generations(db, prompt_id=prompt.id, policy_version_id=0, responses=[(good, 8), (bad, 7)],
                           gen_params={}, pairs=[(0, 1)], judgments_wanted=4)
    # Every pair judged by all four: two honest, one adversarial, one always-left.
    simulate_annotators(db, crowd="honest:2,adversarial:1,left:1", judgments=160, gold=marker_gold, seed=0,
                        progress=False)
    return ws, db


def test_crowd_bt_tells_the_crowd_apart_and_learns_what_plain_bt_loses(tiny_model_dir: Path, tmp_path: Path):
    gold = synthetic_examples(n_prompts=30, seed=5)  # held-out pairs the gold orders: chosen has the marker
    accuracy = {}
    for model in ("none", "crowd_bt"):
        ws, db = crowd_workspace(tmp_path, model)
        stack = ModelStack.load(tiny_model_dir, device=CPU)
        run_reward_training(ws, db, stack, progress=False)
        accuracy[model], _ = evaluate_reward_model(stack, gold, ws.config.reward)
        metrics = json.loads(current_reward_model(db).metrics_json)
        assert metrics["annotator_model"] == model and metrics["heldout_decisive"] > 0
        if model == "crowd_bt":
            est = metrics["annotators"]
            honest = min(est["sim-honest-1"]["follows_preference"], est["sim-honest-2"]["follows_preference"])
            assert est["sim-adversarial-1"]["eta"] < 0.5 < honest
            assert est["sim-left-1"]["follows_preference"] < honest
            assert est["sim-left-1"]["left_bias"] > 0.5 > est["sim-honest-1"]["left_bias"]
            assert est["sim-honest-1"]["judgments"] == 40 and metrics["crowd_turned_around"] > 0
            assert metrics["annotator_weights_from"].startswith("cross-fitted")
            assert set(stored_reliability(current_reward_model(db))) == set(est)
            # `rlhf status --json` carries them in each annotator's annotator_quality entry.
            quality = json.loads(rlhf("status", "-w", str(ws.root), "--json").stdout)["annotator_quality"]
            liar = quality["sim-adversarial-1"]
            assert liar["eta"] == est["sim-adversarial-1"]["eta"] < 0.5 and liar["eta_judgments"] == 40
            assert liar["eta_reward_model"] == current_reward_model(db).id and liar["control_accuracy"] is None
            assert quality["sim-left-1"]["left_bias"] == est["sim-left-1"]["left_bias"]
            assert 0 < quality["sim-honest-1"]["training_weight"] and "majority_agreement" in liar
        db.dispose()
    # Two honest against one liar and one coin (to the preference): plain Bradley-Terry keeps a weak signal;
    # CrowdBT turns the liar around and discounts the left clicks.
    assert accuracy["crowd_bt"] >= 0.9 and accuracy["crowd_bt"] > accuracy["none"]
