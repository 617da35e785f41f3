"""Annotator quality against a hand-computed example: accuracy on control pairs and agreement with the
majority, each with its count and 95% Wilson interval; the minimum-accuracy filter on real judgment
rows; the export's marking; and `rlhf status --json` / `rlhf controls import` as a user runs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlmodel import select

import storage
from rlhf_core.algorithms.agreement import annotator_quality, below_accuracy, wilson_interval
from rlhf_core.config import Config
from rlhf_core.data.annotator_quality import annotator_quality_report, low_accuracy_annotators, without_annotators
from rlhf_core.data.export import export_preferences
from rlhf_core.service.dashboard import annotation_quality

# Wilson 95% intervals worked out by hand with z = 1.96 (z² = 3.8415):
#   centre = (p + z²/2n) / (1 + z²/n), half = z·sqrt(p(1-p)/n + z²/4n²) / (1 + z²/n)
#   4 of 5: p = .8, 1 + z²/n = 1.7683, centre = 1.18415 / 1.7683 = .66965, half = 1.96·.26536 / 1.7683 = .29412
WILSON = {(4, 5): (0.3755, 0.9638), (1, 2): (0.0945, 0.9055), (2, 4): (0.1500, 0.8500), (2, 2): (0.3424, 1.0),
          (1, 1): (0.2065, 1.0), (8, 10): (0.4902, 0.9433), (0, 5): (0.0, 0.4345)}


@pytest.mark.parametrize(("k", "n"), list(WILSON))
def test_wilson_interval_matches_hand_computation(k: int, n: int) -> None:
    assert wilson_interval(k, n) == pytest.approx(WILSON[(k, n)], abs=1e-4)


def test_wilson_interval_edges() -> None:
    assert wilson_interval(0, 0) is None
    with pytest.raises(ValueError, match="between 0 and n"):
        wilson_interval(3, 2)
    assert annotator_quality({}, {}, ["nobody"]) == {"nobody": {
        "control_judgments": 0, "control_accuracy": None, "control_ci": None,
        "majority_items": 0, "majority_agreement": None, "majority_ci": None}}
    assert below_accuracy({"a": (1, 2), "b": (0, 0), "c": (3, 3)}, 0.6) == {"a"}


def build_example(db: storage.Database) -> dict[str, int]:
    """Three annotators, five control pairs and four training pairs, judged as in the table below.

    controls (expected):  c1 a   c2 b   c3 tie   c4 a   c5 both_bad
      ann                  a      b      tie      b      both_bad     -> 4 of 5 right
      bea                  b      b                                   -> 1 of 2 right
      cy                   (none)                                     -> no figure
    training pairs:        p1     p2     p3     p4
      ann                  a      a      tie    b
      bea                  a      b      a      b
      cy                   a      b      a      -
    Majority of the OTHER raters: ann agrees on p1 (a) and p4 (b), not on p2 (b, b) or p3 (a, a): 2 of 4.
    bea: p1 agrees, p4 agrees (ann alone), p2 and p3 skipped (the others split a/b and tie/a): 2 of 2.
    cy: p1 agrees, p2 and p3 skipped (the others split): 1 of 1.
    """
    users = {name: storage.create_annotator(db, name, "password123").id for name in ("ann", "bea", "cy")}
    storage.add_control_pairs(db, [
        storage.ControlSpec(messages=[{"role": "user", "content": f"control {i}"}], response_a=f"a{i}",
                            response_b=f"b{i}", expected=expected)
        for i, expected in enumerate(["a", "b", "tie", "a", "both_bad"])], source="example")
    with db.session() as s:
        control_pairs = list(s.exec(select(storage.ControlPair.pair_id).where(storage.ControlPair.source == "example")
                                    .order_by(storage.ControlPair.id)).all())
    storage.add_prompts(db, [[{"role": "user", "content": f"training {i}"}] for i in range(4)])
    pairs = []
    for prompt in storage.list_prompts(db, split="train"):
        pairs += [p.id for p in storage.record_generations(
            db, prompt_id=prompt.id, policy_version_id=0, responses=[(f"x{prompt.id}", 1), (f"yy{prompt.id}", 2)],
            gen_params={}, pairs=[(0, 1)], judgments_wanted=3)]
    judgments = {
        "ann": list(zip(control_pairs, ["a", "b", "tie", "b", "both_bad"])) + list(zip(pairs, ["a", "a", "tie", "b"])),
        "bea": list(zip(control_pairs, ["b", "b"])) + list(zip(pairs, ["a", "b", "a", "b"])),
        "cy": list(zip(pairs, ["a", "b", "a"])),
    }
    for name, items in judgments.items():
        for pair_id, choice in items:
            storage.record_judgment(db, pair_id=pair_id, annotator_id=users[name], choice=choice,
                                    require_served=False)
    return users


EXPECTED = {
    "ann": {"control_judgments": 5, "control_accuracy": 0.8, "control_ci": [0.3755, 0.9638],
            "majority_items": 4, "majority_agreement": 0.5, "majority_ci": [0.15, 0.85]},
    "bea": {"control_judgments": 2, "control_accuracy": 0.5, "control_ci": [0.0945, 0.9055],
            "majority_items": 2, "majority_agreement": 1.0, "majority_ci": [0.3424, 1.0]},
    "cy": {"control_judgments": 0, "control_accuracy": None, "control_ci": None,
           "majority_items": 1, "majority_agreement": 1.0, "majority_ci": [0.2065, 1.0]},
}


def assert_matches_hand_figures(report: dict[str, dict]) -> None:
    assert set(report) == set(EXPECTED)
    for name, figures in EXPECTED.items():
        for key, value in figures.items():
            got = report[name][key]
            assert (got is None) == (value is None), (name, key)
            if value is not None:
                assert got == pytest.approx(value, abs=1e-4), (name, key)


def test_quality_figures_match_the_hand_computed_example(db) -> None:
    build_example(db)
    assert_matches_hand_figures(annotator_quality_report(db))
    page = annotation_quality(db)  # what the operator page shows
    assert_matches_hand_figures(page["annotators"])
    assert page["control_pairs"] == 5 and page["judgments"] == 11  # control judgments are not in the 11


def test_min_accuracy_filter_changes_the_training_set_as_configured(db) -> None:
    from rlhf_core.training.reward_data import preference_examples

    build_example(db)
    rows = storage.judgment_rows(db, kinds=("train",))  # reward-model training's read
    assert len(rows) == 11
    config = Config()
    assert config.reward.min_annotator_accuracy == 0.0
    assert low_accuracy_annotators(db, config.reward.min_annotator_accuracy) == set()
    assert without_annotators(rows, set()) == rows

    config.reward.min_annotator_accuracy = 0.6  # bea (1 of 2) is below; ann (4 of 5) is not; cy has no controls
    low = low_accuracy_annotators(db, config.reward.min_annotator_accuracy)
    assert low == {"bea"}
    kept = without_annotators(rows, low)
    assert len(kept) == 7 and {r.annotator for r in kept} == {"ann", "cy"}
    assert [r.judgment_id for r in kept] == [r.judgment_id for r in rows if r.annotator != "bea"]
    all_examples, _ = preference_examples(rows)
    kept_examples, _ = preference_examples(kept)
    assert len(kept_examples) < len(all_examples)

    assert low_accuracy_annotators(db, 0.85) == {"ann", "bea"}
    assert low_accuracy_annotators(db, 0.5) == set()  # 0.5 is not below 0.5


def test_export_marks_annotators_below_the_minimum(db, tmp_path: Path) -> None:
    build_example(db)
    plain = export_preferences(db, tmp_path / "plain", fmt="jsonl", test_fraction=0.0, include_ties=True)
    rows = [json.loads(line) for line in (tmp_path / "plain" / "train.jsonl").read_text().splitlines()]
    assert plain.n_low_accuracy_annotators == 0 and all(r["low_accuracy_annotators"] == [] for r in rows)

    marked = export_preferences(db, tmp_path / "marked", fmt="jsonl", test_fraction=0.0, include_ties=True,
                                min_annotator_accuracy=0.6)
    rows = [json.loads(line) for line in (tmp_path / "marked" / "train.jsonl").read_text().splitlines()]
    assert marked.n_low_accuracy_annotators == 1 and len(rows) == plain.n_rows
    assert all(r["low_accuracy_annotators"] == (["bea"] if "bea" in r["annotators"] else []) for r in rows)
    card = (tmp_path / "marked" / "README.md").read_text()
    assert "minimum 0.6 on control pairs; 1 annotator(s) below it" in card and "low_accuracy_annotators" in card

    anonymous = export_preferences(db, tmp_path / "anon", fmt="jsonl", test_fraction=0.0, include_ties=True,
                                   min_annotator_accuracy=0.6, anonymize=True)
    rows = [json.loads(line) for line in (tmp_path / "anon" / "train.jsonl").read_text().splitlines()]
    assert anonymous.n_low_accuracy_annotators == 1
    # ann judged first, then bea: bea is annotator-2 in this export, and is marked under that name.
    assert {tuple(r["low_accuracy_annotators"]) for r in rows} == {("annotator-2",)}


def rlhf(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "rlhf_core", *args], capture_output=True, text=True,
                          env=dict(os.environ), timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(f"rlhf {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def test_cli_imports_controls_and_status_json_reports_quality(tmp_path: Path) -> None:
    from rlhf_core.workspace import open_workspace

    ws_dir = tmp_path / "proj"
    rlhf("init", "-w", str(ws_dir))
    status = json.loads(rlhf("status", "--json", "-w", str(ws_dir)).stdout)
    assert status["annotator_quality"] == {}
    assert {"counts", "judgments_per_annotator", "versions", "jobs"} <= set(status)

    good = tmp_path / "controls.csv"
    good.write_text("prompt,response_a,response_b,expected\nTwo plus two?,4,5,a\nGreet me,Hi!,Go away.,a\n")
    out = rlhf("controls", "import", str(good), "-w", str(ws_dir)).stdout
    assert "Imported 2 control pairs from controls.csv (0 already there); 2 in all, served as 10%" in out
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "p", "response_a": "x", "response_b": "y", "expected": "a"}\n{"prompt": "p"\n')
    refused = rlhf("controls", "import", str(bad), "-w", str(ws_dir), check=False)
    assert refused.returncode == 1 and refused.stderr.strip().count("\n") == 0
    assert f"{bad}:2: not valid JSON" in refused.stderr

    db = open_workspace(ws_dir).database()
    try:
        assert storage.count_control_pairs(db) == 2
        build_example(db)
    finally:
        db.dispose()
    status = json.loads(rlhf("status", "--json", "-w", str(ws_dir)).stdout)
    assert_matches_hand_figures(status["annotator_quality"])
    assert status["judgments_per_annotator"] == {"ann": 9, "bea": 6, "cy": 3}
    text = rlhf("status", "-w", str(ws_dir)).stdout
    assert "control 80% [38%, 96%] of 5; majority 50% [15%, 85%] of 4" in text
