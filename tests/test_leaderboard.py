"""The systems leaderboard: arena math against hand numbers, the choix fit against statsmodels' maximum
likelihood, a hand-computed three-system example, a simulated tournament whose bootstrap intervals cover the
true ratings, and the commands (`rlhf pairs import`, `rlhf preferences import`, `rlhf leaderboard --json`,
`rlhf status --json`) run as a user runs them."""

from __future__ import annotations

import json
import math
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from rlhf_core.algorithms.preference import (
    ELO_SCALE,
    bootstrap_counts,
    elo_ratings,
    expected_win_rate,
    percentile_interval,
    win_matrix,
)
from rlhf_core.data.leaderboard import LeaderboardError, build_leaderboard, fit_strengths
from storage import SystemJudgment

LN2 = math.log(2)


def test_arena_math_by_hand() -> None:
    # a beats b, a ties c, c beats b twice (once drawn twice by a resample).
    wins = win_matrix(np.array([0, 0, 2]), np.array([1, 2, 1]), np.array([1.0, 0.5, 1.0]), 3,
                      counts=np.array([1, 1, 2]))
    np.testing.assert_array_equal(wins, [[0, 1, 0.5], [0, 0, 0], [0.5, 2, 0]])
    # ln 2 of strength = 400·log10(2) = 120.41 Elo points; the baseline (index 1) sits at 1000.
    np.testing.assert_allclose(elo_ratings(np.array([LN2, 0.0, -LN2]), baseline=1), [1120.412, 1000.0, 879.588],
                               atol=1e-3)
    assert ELO_SCALE * math.log(10) == pytest.approx(400.0)
    np.testing.assert_allclose(expected_win_rate(np.array([math.log(3), 0.0]), 0.0), [0.75, 0.5])
    counts = bootstrap_counts(5, rounds=4, seed=0)
    assert counts.shape == (4, 5) and (counts.sum(axis=1) == 5).all()
    np.testing.assert_array_equal(counts, bootstrap_counts(5, rounds=4, seed=0))
    low, high = percentile_interval(np.arange(101.0)[:, None], 0.95)
    np.testing.assert_allclose([low[0], high[0]], [2.5, 97.5])


def three_systems() -> list[SystemJudgment]:
    """A beats B 2/3 of the time (one win, two ties), B beats C 2/3 (two wins of three), A beats C 4/5 (three
    wins, two ties): every pair's share fits Bradley-Terry with A = B + ln 2 and C = B − ln 2 exactly, so the
    maximum-likelihood strengths are those (their score equations hold pair by pair)."""
    def judged(a: str, b: str, choices: str) -> list[SystemJudgment]:
        return [SystemJudgment(a, b, {"a": "a", "b": "b", "t": "tie"}[c], "imported") for c in choices]
    return judged("A", "B", "att") + judged("B", "C", "aab") + judged("C", "A", "bbbtt")


def test_three_system_example_by_hand() -> None:
    judgments = three_systems()
    names = ["A", "B", "C"]
    a = np.array([names.index(j.system_a) for j in judgments])
    b = np.array([names.index(j.system_b) for j in judgments])
    score = np.array([{"a": 1.0, "b": 0.0, "tie": 0.5}[j.choice] for j in judgments])
    exact = fit_strengths(win_matrix(a, b, score, 3), alpha=0.0)
    np.testing.assert_allclose(exact - exact[1], [LN2, 0.0, -LN2], atol=1e-6)
    board = build_leaderboard(judgments + [SystemJudgment("A", "B", "both_bad", "imported")], baseline="B",
                              rounds=100)
    rows = {r.system: r for r in board.systems}
    assert [r.system for r in board.systems] == ["A", "B", "C"]
    # The default pseudo-count moves these few judgments' ratings by a few points at most.
    assert rows["A"].rating == pytest.approx(1120.4, abs=6) and rows["C"].rating == pytest.approx(879.6, abs=6)
    assert rows["B"].rating == 1000.0 and rows["B"].rating_ci == (1000.0, 1000.0)
    assert rows["A"].win_rate_vs_baseline == pytest.approx(2 / 3, abs=0.01)
    assert (rows["A"].judgments, rows["B"].judgments, rows["C"].judgments) == (8, 6, 8)
    assert (rows["A"].ties, rows["C"].ties) == (4, 2)
    assert board.judgments == 11 and board.both_bad_left_out == 1 and board.unrated == []
    lo, hi = rows["A"].rating_ci
    assert lo < rows["A"].rating < hi
    as_json = board.as_dict()
    assert set(as_json) == {"baseline", "systems", "judgments", "both_bad_left_out", "bootstrap_rounds", "unrated"}
    assert as_json["systems"][0]["rating_ci"] == list(rows["A"].rating_ci)


def test_choix_fit_is_the_maximum_likelihood_statsmodels_finds() -> None:
    sm = pytest.importorskip("statsmodels.api")
    rng = np.random.default_rng(1)
    wins = rng.integers(1, 30, size=(5, 5)).astype(float)
    np.fill_diagonal(wins, 0)
    ours = fit_strengths(wins, alpha=0.0)
    rows, shares, totals = [], [], []  # one binomial row per pair of systems, system 0 as the reference
    for i in range(5):
        for j in range(i + 1, 5):
            x = np.zeros(5)
            x[i], x[j] = 1.0, -1.0
            rows.append(x[1:])
            shares.append(wins[i, j] / (wins[i, j] + wins[j, i]))
            totals.append(wins[i, j] + wins[j, i])
    glm = sm.GLM(np.array(shares), np.array(rows), family=sm.families.Binomial(), var_weights=np.array(totals)).fit()
    np.testing.assert_allclose(ours[1:] - ours[0], glm.params, atol=1e-5)


def test_simulated_tournament_intervals_cover_the_true_ratings() -> None:
    true = {"v0": 0.0, "alpha": 0.8, "beta": -0.5, "gamma": 0.3}
    rng = random.Random(7)
    names = list(true)
    judgments = []
    for _ in range(1500):
        a, b = rng.sample(names, 2)
        p = 1 / (1 + math.exp(-(true[a] - true[b])))
        judgments.append(SystemJudgment(a, b, "a" if rng.random() < p else "b", "imported"))
    board = build_leaderboard(judgments, rounds=200, seed=3)
    assert board.baseline == "v0"  # the base model, by default
    for row in board.systems:
        truth = 1000 + ELO_SCALE * (true[row.system] - true["v0"])
        lo, hi = row.rating_ci
        assert lo <= truth <= hi, (row.system, truth, row.rating_ci)
        true_win = 1 / (1 + math.exp(-(true[row.system] - true["v0"])))
        assert row.win_rate_ci[0] <= true_win <= row.win_rate_ci[1]
        if row.system != "v0":
            assert hi - lo < 120  # informative, not trivially wide
    assert [r.system for r in board.systems] == sorted(names, key=lambda s: -true[s])


def test_unknown_baseline_unconnected_systems_and_no_data() -> None:
    judgments = three_systems() + [SystemJudgment("X", "Y", "a", "imported")] * 3
    with pytest.raises(LeaderboardError, match="baseline 'Z' has no judged pair"):
        build_leaderboard(judgments, baseline="Z")
    board = build_leaderboard(judgments, baseline="A", rounds=20)
    assert {r.system for r in board.systems} == {"A", "B", "C"} and board.unrated == ["X", "Y"]
    empty = build_leaderboard([], rounds=20)
    assert empty.baseline is None and empty.systems == []


# -- the commands ------------------------------------------------------------------------------------


def rlhf(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "rlhf_core", *args], capture_output=True, text=True,
                          env=dict(os.environ), timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(f"rlhf {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.mark.slow  # subprocesses that load models: ~16 s on 2 cores (CI runs the slow suite too)
def test_import_commands_leaderboard_and_status_json(tmp_path: Path) -> None:
    import storage
    from rlhf_core.workspace import open_workspace

    ws = tmp_path / "proj"
    rlhf("init", "--workspace", str(ws))
    pairs = tmp_path / "arena.jsonl"
    pairs.write_text("".join(json.dumps({"prompt": f"q{i}", "response_a": f"old answer {i}",
                                         "response_b": f"new answer {i}", "system_a": "old", "system_b": "new"}) + "\n"
                             for i in range(8)), encoding="utf-8")
    out = rlhf("pairs", "import", str(pairs), "-w", str(ws), "--name", "arena").stdout
    assert "Imported 8 pairs as 'arena' (0 duplicates skipped)" in out
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"prompt": "q", "chosen": "x", "rejected": "x"}) + "\n", encoding="utf-8")
    refused = rlhf("preferences", "import", str(bad), "-w", str(ws), check=False)
    assert refused.returncode == 1
    assert refused.stderr.strip().splitlines()[-1].startswith(f"error: {bad}:1: chosen and rejected are the same")
    prefs = tmp_path / "prefs.jsonl"
    prefs.write_text(json.dumps({"prompt": "q", "chosen": "x", "rejected": "y"}) + "\n", encoding="utf-8")
    assert "Imported 1 prior judgments as 'hh' with weight 0.5" in rlhf(
        "preferences", "import", str(prefs), "-w", str(ws), "--name", "hh", "--weight", "0.5").stdout

    db = open_workspace(ws).database()
    user = storage.create_annotator(db, "ann", "password123").id
    while (served := storage.next_pair_for(db, user)) is not None:  # "new" wins 6 of 8
        text = served.left_text if served.left_side == "b" else served.right_text
        storage.record_judgment(db, pair_id=served.pair_id, annotator_id=user,
                                choice="b" if int(text.split()[-1]) < 6 else "a")
    db.dispose()
    board = json.loads(rlhf("leaderboard", "-w", str(ws), "--json", "--baseline", "old").stdout)
    assert board["baseline"] == "old" and [s["system"] for s in board["systems"]] == ["new", "old"]
    assert board["systems"][0]["win_rate_vs_baseline"] == pytest.approx(0.75, abs=0.02)
    assert board["systems"][0]["judgments"] == 8
    status = json.loads(rlhf("status", "-w", str(ws), "--json").stdout)
    assert status["leaderboard"]["baseline"] == "new"  # default: the most judged, then by name
    assert status["prior_preferences"] == {"hh": 1} and status["imported_pairs"] == {"arena": {"pairs": 8, "open": 0}}
    assert status["counts"]["judgments"] == 8  # prior judgments are counted apart
    text = rlhf("leaderboard", "-w", str(ws)).stdout
    assert "ties count half a win" in text and text.splitlines()[1].startswith("new")
    unknown = rlhf("leaderboard", "-w", str(ws), "--baseline", "v7", check=False)
    assert unknown.returncode == 1 and "baseline 'v7' has no judged pair" in unknown.stderr
