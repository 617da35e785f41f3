"""Simulated crowds (rlhf_core.simulator.crowd): each kind of annotator behaves as specified when it judges through
the real serving path (`next_pair_for` randomises the sides, `choice_from_screen` maps the click back), the
crowd spec is read or refused in one line, and simulated annotators judge control pairs too.

Tests taking `db` run on SQLite and on PostgreSQL."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path

import pytest
from test_cli import rlhf
from test_simulate import add_pairs, chosen_and_rejected

from rlhf_core.registry import CROWD_KINDS
from rlhf_core.simulator.crowd import CrowdSpecError, GoldView, crowd_members, kind_of, parse_crowd
from rlhf_core.simulator.simulate import SimulationError, simulate_annotators
from rlhf_core.workspace import init_workspace
from storage import ControlSpec, add_control_pairs, control_judgments, judgment_rows

# "longer" gold: clearly different lengths (easy), and lengths within 20% of their sum of each other (close).
EASY = [("x" * n, "y" * m) for n, m in [(2, 30), (40, 3), (5, 50), (60, 4)] * 10]
CLOSE = [("x" * n, "y" * m) for n, m in [(100, 110), (121, 111), (90, 99), (108, 100)] * 10]


def by_annotator(db) -> dict[str, list]:  # noqa: ANN001
    rows = defaultdict(list)
    for row in judgment_rows(db):
        rows[row.annotator].append(row)
    return rows


def agrees_with_longer(row) -> bool:  # noqa: ANN001
    chosen, rejected = chosen_and_rejected(row)
    return len(chosen) > len(rejected)


def test_crowd_spec_names_users_by_kind_and_refuses_bad_specs():
    assert parse_crowd("honest:3, random:1,LEFT") == [("honest", 3), ("random", 1), ("left", 1)]
    assert crowd_members("honest:2,adversarial:1") == [("sim-honest-1", "honest"), ("sim-honest-2", "honest"),
                                                        ("sim-adversarial-1", "adversarial")]
    assert kind_of("sim-lazy-3") == "lazy" and kind_of("sim-3") is None and kind_of("sim-bored-1") is None
    assert set(CROWD_KINDS) == {"honest", "random", "left", "adversarial", "lazy"}
    for spec, message in [("honest:3,sloppy:1", "unknown annotator kind 'sloppy'; kinds: honest, random"),
                          ("honest:0", "at least 1, got '0'"), ("honest:two", "got 'two'"),
                          ("left:1,left:2", "named twice"), (" , ", "names no annotator")]:
        with pytest.raises(CrowdSpecError, match=message):
            parse_crowd(spec)


def test_close_pairs_by_the_gold_margin():
    assert GoldView(0.8, 0.9).close and not GoldView(0.4, 0.9).close
    assert GoldView(3.0, 4.0).close and not GoldView(1.0, 2.0).close and GoldView(0.0, 0.0).close
    assert GoldView(0.0, 0.9).preferred == "right" and GoldView(2.0, 2.0).preferred == "tie"


def test_each_kind_judges_as_specified_through_the_serving_path(db):
    add_pairs(db, EASY + CLOSE, k=5)
    crowd = "honest:1,random:1,left:1,adversarial:1,lazy:1"
    result = simulate_annotators(db, crowd=crowd, judgments=5 * 80, gold="longer", seed=3, progress=False)
    assert result.judgments == 400 and set(result.per_annotator.values()) == {80}
    assert result.kinds == {"sim-honest-1": "honest", "sim-random-1": "random", "sim-left-1": "left",
                            "sim-adversarial-1": "adversarial", "sim-lazy-1": "lazy"}
    rows = by_annotator(db)
    # Sides really were randomised for everyone, so "always left" is not "always a".
    assert all({r.left_side for r in rows[name]} == {"a", "b"} for name in result.kinds)
    # left: every choice is the side that was shown on the left.
    assert all(r.choice == r.left_side for r in rows["sim-left-1"])
    # honest (no noise): always the longer response; adversarial: always the shorter one.
    assert all(agrees_with_longer(r) for r in rows["sim-honest-1"])
    assert not any(agrees_with_longer(r) for r in rows["sim-adversarial-1"])
    # random: all three answers, picks not tied to a side.
    choices = Counter(r.choice for r in rows["sim-random-1"])
    assert set(choices) == {"a", "b", "tie"} and min(choices.values()) >= 15
    # lazy: honest on easy pairs, random (ties and wrong picks included) on close ones.
    easy = {a for a, _ in EASY}
    lazy_easy = [r for r in rows["sim-lazy-1"] if r.text_a in easy]
    lazy_close = [r for r in rows["sim-lazy-1"] if r.text_a not in easy]
    assert lazy_easy and all(r.choice != "tie" and agrees_with_longer(r) for r in lazy_easy)
    assert any(r.choice == "tie" for r in lazy_close) and any(r.choice != "tie" and not agrees_with_longer(r)
                                                              for r in lazy_close)
    assert result.flipped == len([r for r in judgment_rows(db) if r.choice != "tie" and not agrees_with_longer(r)])


def test_crowd_and_honest_annotators_need_a_valid_spec(db):
    add_pairs(db, EASY[:1])
    with pytest.raises(SimulationError, match="unknown annotator kind 'bored'"):
        simulate_annotators(db, crowd="bored:2", judgments=1, gold="longer", progress=False)


def test_simulated_annotators_judge_control_pairs_by_their_kind(db):
    add_pairs(db, EASY[:8])
    add_control_pairs(db, [ControlSpec(messages=[{"role": "user", "content": f"control {i}"}],
                                       response_a="a" * 3, response_b="b" * 30, expected="b") for i in range(6)])
    simulate_annotators(db, crowd="honest:1,adversarial:1", judgments=20, gold="longer", kinds=("train",),
                        control_rate=0.5, seed=1, progress=False)
    judged = Counter((j.annotator, j.choice == j.expected) for j in control_judgments(db))
    assert judged[("sim-honest-1", True)] > 0 and judged[("sim-honest-1", False)] == 0
    assert judged[("sim-adversarial-1", False)] > 0 and judged[("sim-adversarial-1", True)] == 0


def test_cli_simulate_with_a_crowd(tmp_path: Path):
    ws, _ = init_workspace(tmp_path / "ws")
    db = ws.database()
    add_pairs(db, EASY[:12])
    db.dispose()
    out = rlhf("simulate", "-w", str(ws.root), "--crowd", "honest:2,left:1", "--judgments", "9", "--gold",
               "longer").stdout
    assert "Recorded 9 judgments" in out
    assert out.split("sim-left-1")[1].split() [:2] == ["3", "left"]
    status = json.loads(rlhf("status", "-w", str(ws.root), "--json").stdout)
    assert status["judgments_per_annotator"] == {"sim-honest-1": 3, "sim-honest-2": 3, "sim-left-1": 3}
    refused = rlhf("simulate", "-w", str(ws.root), "--crowd", "left", "--annotators", "2", check=False)
    assert refused.returncode == 1
    assert refused.stderr.strip().splitlines()[-1] == "error: give --annotators (honest ones) or --crowd, not both"


def test_cli_simulate_with_the_concise_gold_and_a_target(tmp_path: Path):
    """--gold concise --target T: the answer nearer T characters wins, shorter or longer (EASY's pairs are 2-5
    against 30-60 characters)."""
    ws, _ = init_workspace(tmp_path / "ws")
    db = ws.database()
    add_pairs(db, EASY[:8])
    db.dispose()
    refused = rlhf("simulate", "-w", str(ws.root), "--gold", "concise", "--target", "0", check=False)
    assert refused.returncode == 1
    assert "target of at least 1 character" in refused.stderr.strip().splitlines()[-1]
    seen: set[int] = set()
    for target, wins in ((3, lambda n: n <= 5), (45, lambda n: n >= 30)):  # shorter wins under 3, longer under 45
        out = rlhf("simulate", "-w", str(ws.root), "--annotators", "1", "--judgments", "4", "--gold", "concise",
                   "--target", str(target), "--seed", str(target)).stdout
        assert "Recorded 4 judgments (0 ties, 0 against the gold)" in out
        db = ws.database()
        new = [row for row in judgment_rows(db) if row.judgment_id not in seen]
        db.dispose()
        assert len(new) == 4 and all(wins(len(chosen_and_rejected(row)[0])) for row in new)
        seen |= {row.judgment_id for row in new}
