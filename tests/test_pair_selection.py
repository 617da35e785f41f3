"""Pair selection in storage: which method chose each pair and how informative the sampler judged it,
the serving order (priority, then info score, then age) on its partial index, the per-round counts
the operator page shows, and the migration of an existing database."""

from __future__ import annotations

import math
import uuid
from pathlib import Path

import pytest
from sqlalchemy import event
from sqlmodel import select

import storage
from storage import Pair


def prompt_id(db: storage.Database) -> int:
    conv = [{"role": "user", "content": f"q {uuid.uuid4().hex}"}]
    storage.add_prompts(db, [conv])
    with db.session() as s:
        return s.exec(select(storage.Prompt.id).where(storage.Prompt.content_hash == storage.content_hash(conv))).one()


def four_responses(db: storage.Database, **kwargs) -> list[Pair]:  # noqa: ANN003
    return storage.record_generations(db, prompt_id=prompt_id(db), policy_version_id=0,
                                      responses=[(f"r{i}", 1) for i in range(4)], gen_params={},
                                      pairs=[(0, 1), (0, 2), (2, 3)], **kwargs)


def test_selection_and_info_scores_are_stored_with_defaults_for_old_callers(db) -> None:
    plain = four_responses(db)
    scored = four_responses(db, selection="uncertainty", info_scores=[0.1, 0.7, 0.3], round=2)
    with db.session() as s:
        rows = {p.id: p for p in s.exec(select(Pair))}
    assert [(rows[p.id].selection, rows[p.id].info_score) for p in plain] == [("all", 0.0)] * 3
    assert [(rows[p.id].selection, rows[p.id].info_score) for p in scored] == [
        ("uncertainty", 0.1), ("uncertainty", 0.7), ("uncertainty", 0.3)]


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"selection": "best"}, "selection must be one of"),
    ({"info_scores": [0.1, 0.2]}, "2 info_scores for 3 pairs"),
    ({"info_scores": [0.1, math.nan, 0.2]}, "finite"),
])
def test_bad_selection_arguments_write_nothing(db, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        four_responses(db, **kwargs)
    counts = storage.status_counts(db)["counts"]
    assert counts["samples"] == counts["pairs"] == 0


def test_open_pairs_are_served_by_priority_then_info_score_then_age(db) -> None:
    low, high, mid = four_responses(db, selection="uncertainty", info_scores=[0.2, 0.9, 0.5])
    (plain,) = storage.record_generations(db, prompt_id=prompt_id(db), policy_version_id=0,
                                          responses=[("x", 1), ("y", 1)], gen_params={}, pairs=[(0, 1)])
    (tied,) = storage.record_generations(db, prompt_id=prompt_id(db), policy_version_id=0,
                                         responses=[("x", 1), ("y", 1)], gen_params={}, pairs=[(0, 1)],
                                         selection="uncertainty", info_scores=[0.9])
    (urgent,) = storage.record_generations(db, prompt_id=prompt_id(db), policy_version_id=0,
                                           responses=[("x", 1), ("y", 1)], gen_params={}, pairs=[(0, 1)], priority=10)
    user = storage.create_annotator(db, "ann", "password123").id
    order = []
    while (served := storage.next_pair_for(db, user)) is not None:
        order.append(served.pair_id)
        storage.record_judgment(db, pair_id=served.pair_id, annotator_id=user, choice="a")
    assert order == [urgent.id, high.id, tied.id, mid.id, low.id, plain.id]


def test_the_newest_rounds_pairs_are_served_first(db) -> None:
    """At equal priority, pairs of a later round (sampled from a newer policy) come before older
    leftovers, whatever their info scores."""
    pid = prompt_id(db)

    def pair(round_: int, score: float) -> int:
        (row,) = storage.record_generations(db, prompt_id=pid, policy_version_id=0, responses=[("x", 1), ("y", 1)],
                                            gen_params={}, pairs=[(0, 1)], round=round_, selection="uncertainty",
                                            info_scores=[score])
        return row.id

    old_sure, old_unsure, new_sure, new_unsure = pair(1, 0.1), pair(1, 0.9), pair(2, 0.1), pair(2, 0.9)
    user = storage.create_annotator(db, "ann", "password123").id
    order = []
    while (served := storage.next_pair_for(db, user)) is not None:
        order.append(served.pair_id)
        storage.record_judgment(db, pair_id=served.pair_id, annotator_id=user, choice="a")
    assert order == [new_unsure, new_sure, old_unsure, old_sure]


def test_next_pair_reads_the_first_open_pair_off_the_partial_index(sqlite_db) -> None:
    db = sqlite_db
    for _ in range(3):
        four_responses(db, selection="uncertainty", info_scores=[0.1, 0.2, 0.3])
    user = storage.create_annotator(db, "ann", "password123").id
    statements: list[tuple[str, object]] = []

    def capture(conn, cursor, statement, parameters, context, executemany) -> None:  # noqa: ANN001
        if "ORDER BY pair.priority DESC" in statement:
            statements.append((statement, parameters))

    event.listen(db.engine, "before_cursor_execute", capture)
    try:
        assert storage.next_pair_for(db, user) is not None
    finally:
        event.remove(db.engine, "before_cursor_execute", capture)
    (statement, parameters), = statements
    with db.engine.connect() as conn:
        plan = " | ".join(str(row[-1]) for row in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, parameters))
    assert "ix_pair_open_priority" in plan and "TEMP B-TREE" not in plan, plan


def test_pair_counts_per_round_and_selection(db) -> None:
    four_responses(db, round=1)
    pairs = four_responses(db, round=2, selection="random", info_scores=[0.0, 0.0, 0.0])
    four_responses(db, round=2, selection="uncertainty", info_scores=[0.2, 0.4, 0.6])
    storage.add_control_pairs(db, [storage.ControlSpec(messages=[{"role": "user", "content": "c"}],
                                                       response_a="x", response_b="y", expected="a")])
    user = storage.create_annotator(db, "ann", "password123").id
    storage.record_judgment(db, pair_id=pairs[0].id, annotator_id=user, choice="a", require_served=False)
    counts = storage.pair_selection_counts(db)
    assert [(c["round"], c["kind"], c["selection"], c["pairs"], c["open"], c["judgments"]) for c in counts] == [
        (2, "train", "random", 3, 2, 1), (2, "train", "uncertainty", 3, 3, 0), (1, "train", "all", 3, 3, 0)]
    assert counts[1]["mean_info_score"] == pytest.approx(0.4)


def test_a_database_from_before_pair_selection_upgrades_with_defaults(tmp_path: Path) -> None:
    from alembic import command

    db = storage.Database(f"sqlite:///{tmp_path / 'old.db'}")
    cfg = db._alembic_config()
    with db.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0002")
        conn.exec_driver_sql("INSERT INTO policyversion (id, algorithm, round, metrics_json, created_at) "
                             "VALUES (0, 'base', 0, '{}', '2026-01-01')")
        conn.exec_driver_sql("INSERT INTO prompt (id, messages_json, content_hash, source, split, created_at) "
                             "VALUES (1, '[]', 'h', '', 'train', '2026-01-01')")
        for sample in (1, 2):
            conn.exec_driver_sql("INSERT INTO sample (id, prompt_id, policy_version_id, text, token_count, "
                                 f"gen_params_json, created_at) VALUES ({sample}, 1, 0, 't{sample}', 1, '{{}}', "
                                 "'2026-01-01')")
        conn.exec_driver_sql("INSERT INTO pair (id, prompt_id, sample_a_id, sample_b_id, round, kind, "
                             "judgments_wanted, n_judgments, priority, created_at) "
                             "VALUES (1, 1, 1, 2, 0, 'train', 1, 0, 0, '2026-01-01')")
    db.upgrade()
    try:
        with db.session() as s:
            pair = s.get(Pair, 1)
        assert (pair.selection, pair.info_score) == ("all", 0.0)
        assert storage.count_control_pairs(db) == 0
    finally:
        db.dispose()
