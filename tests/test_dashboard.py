"""Operator-page numbers computed from a real database: agreement, position bias, win rates."""

from __future__ import annotations

import random

import pytest

import storage
from rlhf_core.loop.evaluation import EVAL_KIND, human_win_rates
from rlhf_core.service.dashboard import annotation_quality, live_status, rounds_table


def _pairs(db, n: int, *, kind: str = "train", versions=(0, 0), k: int = 2) -> list[int]:
    storage.add_prompts(db, [[{"role": "user", "content": f"{kind} prompt {i}"}] for i in range(n)])
    ids = []
    for p in storage.list_prompts(db)[-n:]:
        a, = storage.add_samples(db, prompt_id=p.id, policy_version_id=versions[0], responses=[("A", 1)],
                                 gen_params={})
        b, = storage.add_samples(db, prompt_id=p.id, policy_version_id=versions[1], responses=[("B", 1)],
                                 gen_params={})
        ids.append(storage.add_pair_between(db, prompt_id=p.id, sample_a_id=a, sample_b_id=b, round=0,
                                            judgments_wanted=k, kind=kind).id)
    return ids


def _judge_all(db, user_id: int, choose) -> None:  # noqa: ANN001
    rng = random.Random(user_id)
    while (served := storage.next_pair_for(db, user_id, rng=rng)) is not None:
        storage.record_judgment(db, pair_id=served.pair_id, annotator_id=user_id, choice=choose(served))


def test_quality_metrics_from_two_annotators(sqlite_db) -> None:
    db = sqlite_db
    _pairs(db, 6)
    u1 = storage.create_annotator(db, "u1", "password123")
    u2 = storage.create_annotator(db, "u2", "password123")
    _judge_all(db, u1.id, lambda s: "a")
    _judge_all(db, u2.id, lambda s: "a" if s.pair_id % 2 else "tie")
    q = annotation_quality(db)
    assert q["judgments"] == 12 and q["pairs_with_overlap"] == 6
    # u1 always "a"; u2 agrees on 3 pairs and says "tie" on 3: kappa by hand:
    # P_i = 1 on 3 items, 0 on 3 -> P̄ = 0.5; p_a = 9/12, p_tie = 3/12 -> P_e = 0.625; kappa = -1/3.
    assert q["fleiss_kappa"] == pytest.approx((0.5 - 0.625) / (1 - 0.625))
    assert q["tie_rate"] == pytest.approx(3 / 12)
    rows = storage.judgment_rows(db)
    decisive = [r for r in rows if r.choice in ("a", "b")]
    expected_left = sum(r.left_side == "a" for r in decisive) / len(decisive)
    assert q["position_bias_left_share"] == pytest.approx(expected_left)
    # Each is compared with the majority of the *other* raters (here: the other one): 3 of 6 agree.
    assert q["agreement_with_majority"] == {"u1": 0.5, "u2": 0.5}


def test_human_win_rate_and_rounds_table(sqlite_db) -> None:
    db = sqlite_db
    v1 = storage.add_policy_version(db, parent_id=0, adapter_path="/nowhere", algorithm="grpo", round=1,
                                    metrics={"reward_mean": 0.5, "kl_per_token": 0.01})
    _pairs(db, 4, kind=EVAL_KIND, versions=(v1.id, 0), k=1)
    user = storage.create_annotator(db, "judge", "password123")
    choices = iter(["a", "a", "tie", "b"])  # policy is sample a: 1 + 1 + 0.5 + 0 = 2.5 of 4
    _judge_all(db, user.id, lambda s: next(choices))
    rates = human_win_rates(db)
    assert rates.keys() == {v1.id}
    assert {k: rates[v1.id][k] for k in ("win_rate", "judgments", "wins")} == {"win_rate": 2.5 / 4, "judgments": 4,
                                                                                "wins": 2.5}
    # Wilson 95% by hand: centre (0.625 + 1.96²/8) / (1 + 1.96²/4) = 0.5638, half-width 0.3443.
    assert rates[v1.id]["interval"] == pytest.approx([0.2194, 0.9081], abs=1e-4)
    table = rounds_table(db)
    assert [r["version"] for r in table] == [0, v1.id]
    assert table[1]["human_win_rate"] == pytest.approx(0.625)
    assert table[1]["reward_mean"] == 0.5 and table[1]["kl_per_token"] == 0.01
    status = live_status(db)
    assert status["judgments_per_day"][0]["judgments"] == 4
    assert status["counts"]["judgments"] == 4
