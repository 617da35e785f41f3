"""Evidence that the loop improves, as numbers (rlhf_core.algorithms.evidence): the conservative reward against
hand-computed values, cross-fitted accuracy and its false-open rate on labels with no signal, effect sizes, the
over-optimization rule and the "worse than its predecessor" rule on hand-made histories, and the pooled gate."""

from __future__ import annotations

import json

import pytest
import torch

from rlhf_core.algorithms.evidence import (
    Accuracy,
    VersionEvidence,
    accuracy_of,
    conservative_reward,
    cross_fitted_margins,
    effect_size,
    fold_of,
    overoptimization_alarm,
    worse_than_predecessor,
)
from rlhf_core.loop.rounds import policy_gate
from storage import RewardModelVersion


def test_conservative_reward_against_hand_computed_values() -> None:
    members = torch.tensor([[1.0, 3.0], [2.0, 2.0], [0.0, 4.0]])
    assert conservative_reward(members, "mean").tolist() == [2.0, 2.0, 2.0]
    # population std per row: 1, 0, 2
    assert conservative_reward(members, "uwo", 0.5).tolist() == [1.5, 2.0, 1.0]
    assert conservative_reward(members, "uwo", 0.0).tolist() == [2.0, 2.0, 2.0]
    assert conservative_reward(members, "wco").tolist() == [1.0, 2.0, 0.0]
    three = torch.tensor([[1.0, 2.0, 6.0]])  # mean 3, population std sqrt(14/3) = 2.1602
    assert conservative_reward(three, "uwo", 1.0).item() == pytest.approx(3 - 2.1602, abs=1e-4)
    with pytest.raises(ValueError, match="unknown conservative mode 'max'"):
        conservative_reward(members, "max")
    with pytest.raises(ValueError, match=r"must be \[B, K\]"):
        conservative_reward(torch.ones(3), "mean")


def test_folds_keep_a_prompt_together_and_are_balanced() -> None:
    groups = [1, 1, 2, 3, 3, 3, 4, 5, 6, 7]
    folds = fold_of(groups, 3, seed=0)
    for g in set(groups):
        assert len({int(folds[i]) for i, x in enumerate(groups) if x == g}) == 1
    per_fold = [len({g for g, f in zip(groups, folds.tolist()) if f == k}) for k in range(3)]
    assert max(per_fold) - min(per_fold) <= 1
    assert fold_of(groups, 3, seed=0).tolist() == folds.tolist()  # seeded


def test_cross_fitted_margins_learn_a_real_preference_out_of_fold() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(200, 20, generator=gen)
    direction = torch.zeros(20)
    direction[0] = 1.0
    sign = torch.where(x @ direction > 0, 1.0, -1.0)
    diff = x * sign[:, None]  # chosen - rejected, oriented so the preference says "more of feature 0"
    folds = fold_of(list(range(200)), 5)
    accuracy = accuracy_of(cross_fitted_margins(diff, folds, 0.1))
    assert accuracy.n == 200 and accuracy.value > 0.85  # L2 0.1 on 160 rows: a little shrinkage, no more
    assert accuracy.interval[0] > 0.8


def test_the_gate_opens_falsely_at_most_5_percent_on_labels_with_no_signal() -> None:
    """Labels flipped on purpose at random (no preference behind them): the cross-fitted evidence's 95% lower bound
    must stay at or below 50%, else the gate opens falsely; over 150 independent labelings it does in at most 5%."""
    gen = torch.Generator().manual_seed(1)
    opens = 0
    trials = 150
    for t in range(trials):
        x = torch.randn(120, 32, generator=gen)  # 120 decisive judgments, 32 features of noise
        flip = torch.where(torch.rand(120, generator=gen) < 0.5, -1.0, 1.0)
        prompts = [i // 2 for i in range(120)]  # two judgments per prompt
        accuracy = accuracy_of(cross_fitted_margins(x * flip[:, None], fold_of(prompts, 5, seed=t), 0.1))
        rm = RewardModelVersion(id=1, adapter_path="-", metrics_json=json.dumps(
            {"crossfit": {"right": accuracy.right, "n": accuracy.n}}))
        opens += policy_gate(rm, 0.5).open
    assert opens / trials <= 0.05, f"false-open rate {opens / trials:.1%}"


def test_effect_size_in_base_standard_deviations() -> None:
    assert effect_size([2.0, 4.0], [0.0, 2.0]) == pytest.approx(2.0)  # base mean 1, std 1; policy mean 3
    assert effect_size([1.0], [1.0, 1.0]) == 0.0  # no spread: no gain can be read
    assert effect_size([], [1.0]) is None


def test_the_gate_pools_cross_fitted_and_fresh_evidence() -> None:
    rm = RewardModelVersion(id=4, adapter_path="-", heldout_accuracy=0.67, metrics_json=json.dumps(
        {"heldout_decisive": 27, "crossfit": {"right": 80, "n": 140}}))
    alone = policy_gate(rm, 0.5)  # 80/140 = 57% at half weight (40/70): Wilson lower bound 45.5%
    assert not alone.open and "cross-fitted accuracy 80/140 = 57% (at 1/2 weight)" in alone.reason
    pooled = policy_gate(rm, 0.5, Accuracy(80, 120))  # (40 + 80) / (70 + 120) = 63.2%: lower bound 56.1%
    assert pooled.open and pooled.lower_bound == pytest.approx(0.5610, abs=1e-3)
    assert "plus fresh accuracy 80/120 = 67%" in pooled.reason
    legacy = RewardModelVersion(id=2, adapter_path="-", heldout_accuracy=0.72,
                                metrics_json=json.dumps({"heldout_decisive": 50}))
    assert policy_gate(legacy, 0.5).open and "held-out accuracy 36/50" in policy_gate(legacy, 0.5).reason


def ev(version: int, claimed: float | None = None, rescored: float | None = None, fresh: tuple | None = None,
       human: tuple | None = None, predecessor: float | None = None) -> VersionEvidence:
    return VersionEvidence(version=version, claimed_gain=claimed, rescored_gain=rescored,
                           rescored_predecessor_gain=predecessor, fresh=Accuracy(*fresh) if fresh else None,
                           human_vs_previous=Accuracy(*human) if human else None)


def test_the_monitor_stays_quiet_while_every_kind_of_evidence_agrees() -> None:
    history = [ev(1, claimed=0.8, rescored=0.7, fresh=(70, 100), human=(30, 40)),
               ev(2, claimed=1.2, rescored=1.0, fresh=(65, 100), human=(26, 40))]
    assert overoptimization_alarm(history) is None
    assert overoptimization_alarm([]) is None
    # The proxy did not rise: nothing to warn about, whatever else happened.
    assert overoptimization_alarm([ev(1, claimed=1.0), ev(2, claimed=0.9, fresh=(40, 100))]) is None


def test_the_monitor_fires_when_the_proxy_rises_against_fresh_evidence() -> None:
    alarm = overoptimization_alarm([ev(1, claimed=0.8), ev(2, claimed=1.5, fresh=(48, 100))])
    assert alarm is not None and alarm.version == 2
    assert "the proxy gain rose (+0.80 -> +1.50 base std)" in alarm.reason
    assert "right on only 48/100 of v2's fresh judgments" in alarm.reason
    # Too few fresh judgments say nothing yet.
    assert overoptimization_alarm([ev(1, claimed=0.8), ev(2, claimed=1.5, fresh=(5, 12))]) is None
    # Above chance but not yet shown to be (20/32 = 62%, 95% lower bound 45%) is no alarm: the bench's false alarms.
    assert overoptimization_alarm([ev(1, claimed=0.8), ev(2, claimed=1.5, fresh=(20, 32))]) is None


def test_the_monitor_fires_when_people_or_the_next_reward_model_disagree() -> None:
    human = overoptimization_alarm([ev(1, claimed=0.5, human=(12, 30))])  # first version: the base counts 0
    assert human is not None and "people prefer v1 to its predecessor 40% of 30 times" in human.reason
    unconfirmed = overoptimization_alarm([ev(1, claimed=0.4), ev(2, claimed=1.0, rescored=0.3)])
    assert unconfirmed is not None
    assert "re-scores the gain at +0.30 base std, not the +1.00 claimed" in unconfirmed.reason
    assert overoptimization_alarm([ev(1, claimed=0.4), ev(2, claimed=1.0, rescored=0.6)]) is None
    both = overoptimization_alarm([ev(1, claimed=1.0, rescored=-0.2, fresh=(10, 40))])
    assert both is not None and "; and " in both.reason


def test_worse_than_predecessor() -> None:
    assert worse_than_predecessor([ev(1, claimed=0.5, human=(12, 40))]).startswith(
        "people preferred its predecessor: v1 won 30% of 40 judgments")
    assert worse_than_predecessor([ev(1), ev(2, rescored=0.2, predecessor=0.5)]).startswith(
        "the next reward model scores v2 +0.20 base std above the base, below its predecessor's +0.50")
    assert worse_than_predecessor([ev(1), ev(2, rescored=0.45, predecessor=0.5)]) is None  # within 0.1: noise
    assert worse_than_predecessor([ev(1, claimed=0.5, rescored=0.1)]).startswith("over-optimization: v1")
    assert worse_than_predecessor([ev(1, claimed=0.5, rescored=0.4, human=(22, 40))]) is None
    assert worse_than_predecessor([]) is None


def test_the_overoptimization_bench_counts_a_fall_only_beyond_the_peaks_interval() -> None:
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    from overoptimization import fell_from_peak

    # 48 of 48: Wilson 95% lower bound = (1 + 1.9208/48 - 1.96 * sqrt(3.8415 / 9216)) / (1 + 3.8415/48) = 0.9259
    assert not fell_from_peak(1.0, 47 / 48, 48)  # one prompt of 48: noise
    assert not fell_from_peak(1.0, 0.93, 48)
    assert fell_from_peak(1.0, 0.92, 48)
    assert fell_from_peak(0.75, 0.5, 48) and not fell_from_peak(0.75, 0.70, 48)


def test_the_overoptimization_bench_summary_finds_the_divergence_even_where_both_fall_at_the_end() -> None:
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    from overoptimization import summarize

    def rows(curve: list[tuple[float, float]]) -> list[dict]:
        return [{"mode": "mean", "step": 6 * (i + 1), "proxy_gain": proxy, "gold_win_rate": gold, "eval_n": 48,
                 "mean_chars": 100.0, "alarm": "fresh" if i == 4 else None} for i, (proxy, gold) in enumerate(curve)]

    # Up together, then the proxy keeps rising while the gold falls (step 36: 72.9% is below 90.6%'s interval,
    # Wilson lower bound 0.79), then both fall (the policy says almost nothing; the proxy never saw that).
    s = summarize(rows([(0.3, 0.667), (2.0, 0.75), (3.6, 0.906), (5.1, 0.875), (5.3, 0.729), (1.5, 0.427)]))
    assert (s["peak_step"], s["gold_at_peak"], s["proxy_high_after_peak_step"], s["gold_at_proxy_high"]) == (
        18, 0.906, 30, 0.729)
    assert s["diverged"] and s["gold_fell"] and not s["proxy_rose_after_peak"]
    assert (s["alarm_step"], s["alarm_after_peak"]) == (30, 12)
    # The proxy rose after the peak but the gold only dipped within noise: no divergence.
    s = summarize(rows([(1.0, 0.9), (2.0, 1.0), (3.0, 0.979), (4.0, 0.958)]))
    assert not s["diverged"] and s["proxy_high_after_peak"] == 4.0 and not s["gold_fell"]
    # The gold peaked at the last measurement: nothing after it.
    s = summarize(rows([(1.0, 0.6), (2.0, 0.8)]))
    assert s["proxy_high_after_peak_step"] is None and not s["diverged"]
