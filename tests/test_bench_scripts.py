"""The benchmark scripts run end to end on the tiny model and print/write real figures.

They are the only check of their performance targets, so they must not rot; these runs are far too
small to say anything about the targets themselves.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
# A tiny model's first policy steps can pass the default KL budget's share (tests/conftest.py's shrink_for_tiny_rounds
# turns it off too): these runs test the benchmarks' mechanics.
NO_KL_BUDGET = ("--set", "policy.kl_budget=0")


def _run(*args: str, timeout: int) -> str:
    proc = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


def test_train_step_bench_measures_both_sides(tmp_path: Path) -> None:
    out = tmp_path / "figures.json"
    stdout = _run("-m", "bench.train_step", "--model", "tiny", "--steps", "1", "--warmup", "0", "--json", str(out),
                  timeout=900)
    figures = json.loads(out.read_text())
    rows = {row["name"]: row for row in figures["table"]}
    assert set(rows) >= {"reward-model step", "GRPO step (rollout + score + update)", "PPO step peak memory"}
    for row in rows.values():
        assert row["ours"] > 0 and row["theirs"] > 0
        assert row["ratio"] == pytest.approx(row["ours"] / row["theirs"], rel=0.01)
    assert "PPO step peak memory" in stdout and "ratio" in stdout


def test_loop_efficacy_bench_runs_a_round(tmp_path: Path, tiny_model_dir: Path) -> None:
    out = tmp_path / "rounds.json"
    stdout = _run("bench/loop_efficacy.py", *NO_KL_BUDGET,
                  "--model", str(tiny_model_dir), "--rounds", "1", "--judgments", "12",
                  "--gold", "shorter", "--eval-prompts", "4", "--workspace", str(tmp_path / "ws"), "--json", str(out),
                  "--set", "sampling.max_new_tokens=8", "--set", "policy.steps=1", "--set", "policy.max_new_tokens=8",
                  "--set", "reward.epochs=1", "--set", "loop.min_reward_confidence=0", timeout=900)
    (report,) = json.loads(out.read_text())
    assert report["round"] == 1 and report["policy_version"] == 1 and report["judgments"] == 12
    assert 0.0 <= report["gold_win_rate"] <= 1.0
    assert "win rate vs base" in stdout and "(target >= 75%)" in stdout


def test_loop_efficacy_bench_compares_the_loop_with_and_without_sft(tmp_path: Path, tiny_model_dir: Path) -> None:
    out = tmp_path / "rounds.json"
    stdout = _run("bench/loop_efficacy.py", *NO_KL_BUDGET,
                  "--model", str(tiny_model_dir), "--rounds", "1", "--judgments", "12",
                  "--gold", "shorter", "--eval-prompts", "4", "--workspace", str(tmp_path / "ws"), "--json", str(out),
                  "--sft", "4", "--demonstration-samples", "2", "--set", "sampling.max_new_tokens=8",
                  "--set", "policy.steps=1", "--set", "policy.max_new_tokens=8", "--set", "reward.epochs=1",
                  "--set", "sft.epochs=1", "--set", "loop.min_reward_confidence=0", timeout=900)
    rows = json.loads(out.read_text())
    assert [(r["sft_demonstrations"], r["round"], r["algo"]) for r in rows] == [(0, 1, "grpo"), (4, 0, "sft"),
                                                                                (4, 1, "grpo")]
    assert rows[1]["policy_version"] == 1 and rows[2]["policy_version"] == 2
    # An open gate leaves its reason in every row too (here no gate at all), and the table says so.
    assert rows[0]["policy_gate"] is None and rows[0]["gate"].startswith("no gate")
    assert "round 1: policy gate open, no gate (loop.min_reward_confidence = 0)" in stdout
    assert "with vs without SFT" in stdout and "after SFT" in stdout and "policy.reference = sft" in stdout


def test_loop_efficacy_bench_runs_a_crowd(tmp_path: Path, tiny_model_dir: Path) -> None:
    out = tmp_path / "rounds.json"
    stdout = _run("bench/loop_efficacy.py", *NO_KL_BUDGET,
                  "--model", str(tiny_model_dir), "--rounds", "1", "--judgments", "12",
                  "--gold", "shorter", "--eval-prompts", "4", "--workspace", str(tmp_path / "ws"), "--json", str(out),
                  "--crowd", "honest:1,left:1", "--annotator-models", "crowd_bt", "--set", "sampling.max_new_tokens=8",
                  "--set", "policy.steps=1", "--set", "policy.max_new_tokens=8", "--set", "reward.epochs=1",
                  "--set", "loop.min_reward_confidence=0.99", timeout=900)
    (report,) = json.loads(out.read_text())
    assert report["crowd"] == "honest:1,left:1" and report["annotator_model"] == "crowd_bt"
    assert set(report["annotators"]) == {"sim-honest-1", "sim-left-1"}
    assert "round 1: estimated η per annotator" in stdout and "sim-left-1           left" in stdout
    # No dozen judgments put a 95% lower bound above 0.99: the gate kept the policy, and the bench says so.
    assert report["policy_version"] == 0 and report["policy_gate"].startswith("reward model v1")
    assert report["gate"] == report["policy_gate"] and 0.0 <= report["gate_lower_bound"] < 0.99
    assert "policy not updated, reward model v1" in stdout and "policy kept by the gate in rounds [1]" in stdout


def test_reward_learning_bench_with_crowds_and_the_crowdkit_baseline(tmp_path: Path, tiny_model_dir: Path) -> None:
    out = tmp_path / "crowd.json"
    stdout = _run("bench/reward_learning.py", "--model", str(tiny_model_dir), "--gold", "longer", "--budgets", "16",
                  "--crowd", "honest:1,left:1", "--annotator-models", "none,crowd_bt", "--crowdkit",
                  "--json", str(out), timeout=900)
    report = json.loads(out.read_text())
    assert {r["model"] for r in report["runs"].values()} == {
        "none", "crowd_bt", "crowd-kit BradleyTerry", "crowd-kit NoisyBradleyTerry"}
    for name, run in report["runs"].items():
        (row,) = report["curves"][name]
        assert 0.0 <= row["accuracy"] <= 1.0
        if run["model"] == "crowd_bt":
            assert set(row["annotators"]) == {"sim-honest-1", "sim-left-1"}
        if run["model"] == "crowd-kit NoisyBradleyTerry":
            assert set(row["workers"]) == {"sim-honest-1", "sim-left-1"}
    assert "estimated η per annotator after 16 judgments" in stdout and "± 0.000" in stdout


ISSUE_KEYS = {"round", "judgments", "rm_heldout_accuracy", "kl_per_token", "gold_win_rate", "win_rate_vs_previous",
              "policy_length_mean", "seconds"}


def test_loop_efficacy_bench_compares_algorithms_and_golds_over_rounds(tmp_path: Path, tiny_model_dir: Path) -> None:
    out = tmp_path / "rounds.json"
    stdout = _run("bench/loop_efficacy.py", *NO_KL_BUDGET,
                  "--model", str(tiny_model_dir), "--rounds", "2", "--judgments", "12",
                  "--algo", "dpo,grpo", "--gold", "longer,shorter", "--eval-prompts", "4",
                  "--workspace", str(tmp_path / "ws"), "--json", str(out), "--set", "sampling.max_new_tokens=8",
                  "--set", "policy.steps=1", "--set", "policy.max_new_tokens=8", "--set", "reward.epochs=1",
                  "--set", "policy.reference=previous", "--set", "loop.min_reward_confidence=0",
                  # Each round builds on the last (a tiny model's v1 can look worse than the base and be demoted,
                  # and round 2's previous version would then be the base).
                  "--set", "loop.promote=always",
                  # One pair per prompt: exactly the judged pairs are sampled, so round 2 judges only pairs
                  # of v1 (the CPU profile's 4 samples per prompt leave v0 pairs open, served first as oldest).
                  "--set", "sampling.per_prompt=2", timeout=1800)
    rows = json.loads(out.read_text())
    assert [(r["gold"], r["algo"], r["round"]) for r in rows] == [
        (gold, algo, n) for gold in ("longer", "shorter") for algo in ("dpo", "grpo") for n in (1, 2)]
    for row in rows:
        assert ISSUE_KEYS <= row.keys() and row["kl_per_token"] is not None and row["loadavg"]
        assert 0.0 <= row["win_rate_vs_previous"] <= 1.0
        phases = row["phase_seconds"]
        assert set(phases) == {"sample", "judge", "reward_model", "policy", "other"}
        assert phases["reward_model"] > 0 and phases["policy"] > 0 and phases["other"] >= 0
        assert abs(sum(phases.values()) - row["seconds"]) < 1.0
        if row["round"] == 1:  # round 1's previous version is the base
            assert row["win_rate_vs_previous"] == row["gold_win_rate"]
        else:  # with reference = previous, the KL to the base is not the KL to the reference
            assert row["kl_per_token"] != row["kl_to_reference_per_token"]
    assert stdout.count("win rate vs base") >= 4 and "shorter   dpo:" in stdout
    assert "round 2 seconds by phase: sample" in stdout
    assert {p.name for p in (tmp_path / "ws").iterdir()} == {"longer-dpo", "longer-grpo", "shorter-dpo",
                                                              "shorter-grpo"}


def test_generation_bench_measures_every_variant(tmp_path: Path, tiny_model_dir: Path) -> None:
    out = tmp_path / "generation.json"
    _run("bench/generation.py", "--model", str(tiny_model_dir), "--prompts", "4", "--max-new-tokens", "4",
         "--repeats", "1", "--json", str(out), "--profile", str(tmp_path / "profile.txt"), timeout=900)
    figures = json.loads(out.read_text())
    sections = (tmp_path / "profile.txt").read_text().split("=== ")[1:]
    assert [s.splitlines()[0] for s in sections] == [f"{w} / {v}" for w in ("natural", "forced")
                                                   for v in ("hf-base", "before-v0", "before-trained", "ours-v0",
                                                             "ours-trained")]
    assert all("aten operators" in s and "by self host time:" in s and "aten::mm" in s for s in sections)
    for variants in figures["results"].values():
        assert {"hf-base", "ours-v0", "ours-trained"} <= set(variants)
        assert all(v["tokens"] > 0 and v["tokens_per_s"] > 0 for v in variants.values())


def test_reward_learning_bench_writes_curves_and_candidates(tmp_path: Path, tiny_model_dir: Path) -> None:
    out = tmp_path / "curves.json"
    stdout = _run("bench/reward_learning.py", "--model", str(tiny_model_dir), "--gold", "longer", "--budgets", "8,16",
                  "--candidates", "sum-pool", "--json", str(out), timeout=900)
    report = json.loads(out.read_text())
    assert report["gold"] == "longer" and set(report["curves"]) == {"random", "uncertainty"}
    for rows in report["curves"].values():
        assert [r["judgments"] for r in rows] == [8, 16]
        for row in rows:
            assert 0 <= row["decisive"] <= row["judgments"]
            assert 0.0 <= row["accuracy"] <= 1.0 and 0.0 <= row["ece"] <= 1.0
    assert {"sum-pool", "linear-probe-sum-depths-0.0-0.5-1.0"} <= set(report["candidates"])
    assert "uncertainty reaches random's 16-judgment accuracy" in stdout


def test_reward_learning_bench_with_a_prior_dataset(tmp_path: Path, tiny_model_dir: Path) -> None:
    out = tmp_path / "prior.json"
    stdout = _run("bench/reward_learning.py", "--model", str(tiny_model_dir), "--gold", "longer", "--budgets", "8,16",
                  "--selection", "random", "--prior", "40", "--json", str(out), timeout=900)
    report = json.loads(out.read_text())
    assert set(report["curves"]) == {"random", "random+prior"}
    assert [r["judgments"] for r in report["curves"]["random+prior"]] == [8, 16]
    assert "prior dataset: 40 gold-labelled pairs" in stdout
    assert "random+prior: with 40 prior judgments" in stdout
