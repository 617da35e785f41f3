"""Undo on the labeling page's storage side (`storage.labeling.undo`), on SQLite and PostgreSQL: the
last judgment comes back within the window and its pair is shown again; k, leases and the audit log
stay right; after the window, the next judgment or one undo it is final; racing undos take it back once."""

from __future__ import annotations

import random
import threading
import time

from sqlalchemy import func, select

import storage
from storage import Judgment, Lease, Pair

SINCE = storage.utcnow().replace(year=2000)
LEASE = 600


def _pairs(db, n: int, k: int = 1) -> list[int]:  # noqa: ANN001
    storage.add_prompts(db, [[{"role": "user", "content": f"question {i}"}] for i in range(n)])
    ids = []
    for prompt in storage.list_prompts(db):
        ids += [p.id for p in storage.record_generations(
            db, prompt_id=prompt.id, policy_version_id=0, responses=[(f"a{prompt.id}", 2), (f"b{prompt.id}", 2)],
            gen_params={}, pairs=[(0, 1)], judgments_wanted=k)]
    return ids


def _judge(db, user_id: int, pick: str = "left") -> storage.AnnotatorScreen:  # noqa: ANN001
    shown = storage.annotator_screen(db, user_id, lease_seconds=LEASE, since=SINCE)
    return storage.submit_verdict(db, user_id, token=shown.token, pick=pick, lease_seconds=LEASE, since=SINCE)


def _undo(db, user_id: int, judgment_id: int | None, seconds: float = 10.0) -> storage.AnnotatorScreen:  # noqa: ANN001
    return storage.undo_judgment(db, user_id, judgment_id=judgment_id, undo_seconds=seconds, lease_seconds=LEASE,
                                 since=SINCE, address="10.0.0.7")


def _count(db, model, **where) -> int:  # noqa: ANN001, ANN003
    table = model.__table__
    query = select(func.count()).select_from(table)
    for key, value in where.items():
        query = query.where(table.c[key] == value)
    with db.transaction() as conn:
        return conn.execute(query).scalar_one()


def _n_judgments(db, pair_id: int) -> int:  # noqa: ANN001
    with db.transaction() as conn:
        return conn.execute(select(Pair.__table__.c.n_judgments).where(Pair.__table__.c.id == pair_id)).scalar_one()


def test_undo_takes_back_the_last_judgment_and_shows_its_pair_again(db) -> None:  # noqa: ANN001
    _pairs(db, 3)
    alice = storage.create_annotator(db, "alice", "password123")
    before = storage.annotator_screen(db, alice.id, lease_seconds=LEASE, since=SINCE)
    saved = storage.submit_verdict(db, alice.id, token=before.token, pick="right", lease_seconds=LEASE, since=SINCE)
    judged = before.pair.pair_id
    assert saved.outcome == "saved" and saved.judgment_id is not None
    assert saved.pair.pair_id != judged and _n_judgments(db, judged) == 1

    undone = _undo(db, alice.id, saved.judgment_id)
    assert (undone.outcome, undone.outcome_pair) == ("undone", judged)
    assert undone.pair.pair_id == judged  # shown again, with the same sides
    assert (undone.pair.left_text, undone.pair.right_text) == (before.pair.left_text, before.pair.right_text)
    assert undone.token != before.token  # a new serve
    assert _count(db, Judgment) == 0 and _n_judgments(db, judged) == 0
    # One lease: the undone pair's; the pair served after the judgment was handed back.
    assert _count(db, Lease, annotator_id=alice.id) == 1 and _count(db, Lease, pair_id=judged) == 1
    assert undone.progress.judged_total == 0
    (event,) = storage.audit_events(db, action=storage.UNDO_ACTION)
    assert (event.actor, event.address) == ("alice", "10.0.0.7")
    assert event.params["pair"] == judged and event.params["judgment"] == saved.judgment_id
    assert event.params["choice"] in ("a", "b")

    again = storage.submit_verdict(db, alice.id, token=undone.token, pick="left", lease_seconds=LEASE, since=SINCE)
    assert again.outcome == "saved" and _n_judgments(db, judged) == 1 and _count(db, Judgment) == 1


def test_after_the_window_the_next_judgment_or_one_undo_it_is_final(db) -> None:  # noqa: ANN001
    _pairs(db, 4)
    alice = storage.create_annotator(db, "alice", "password123")
    first = _judge(db, alice.id)
    time.sleep(0.4)
    late = _undo(db, alice.id, first.judgment_id, seconds=0.3)
    assert late.outcome == "undo_too_late" and _count(db, Judgment) == 1
    assert late.pair.pair_id == first.pair.pair_id  # the current pair, unchanged

    second = _judge(db, alice.id)
    assert _undo(db, alice.id, first.judgment_id).outcome == "undo_too_late"  # not the last one any more
    assert _undo(db, alice.id, second.judgment_id).outcome == "undone"
    # The first is the newest again, but an undo happened since it was saved: still final.
    assert _undo(db, alice.id, first.judgment_id).outcome == "undo_too_late"
    assert _undo(db, alice.id, second.judgment_id).outcome == "undo_too_late"  # gone already
    assert _undo(db, alice.id, None).outcome == "undo_too_late"
    assert _count(db, Judgment) == 1 and len(storage.audit_events(db, action=storage.UNDO_ACTION)) == 1


def test_nobody_takes_back_someone_elses_judgment(db) -> None:  # noqa: ANN001
    _pairs(db, 2)
    alice = storage.create_annotator(db, "alice", "password123")
    bob = storage.create_annotator(db, "bob", "password123")
    saved = _judge(db, alice.id)
    assert _undo(db, bob.id, saved.judgment_id).outcome == "undo_too_late"
    assert _count(db, Judgment) == 1 and storage.audit_events(db, action=storage.UNDO_ACTION) == []


def test_k_stays_right_the_undoing_annotators_lease_holds_the_slot(db) -> None:  # noqa: ANN001
    (pair_id,) = _pairs(db, 1, k=2)
    alice, bob, carol = (storage.create_annotator(db, n, "password123") for n in ("alice", "bob", "carol"))
    saved = _judge(db, alice.id)
    _judge(db, bob.id)
    assert _n_judgments(db, pair_id) == 2
    assert storage.annotator_screen(db, carol.id, lease_seconds=LEASE, since=SINCE).pair is None
    undone = _undo(db, alice.id, saved.judgment_id)
    assert undone.pair.pair_id == pair_id and _n_judgments(db, pair_id) == 1
    # Alice's fresh lease holds the slot her judgment freed: carol still gets nothing.
    assert storage.annotator_screen(db, carol.id, lease_seconds=LEASE, since=SINCE).pair is None
    storage.submit_verdict(db, alice.id, token=undone.token, pick="tie", lease_seconds=LEASE, since=SINCE)
    assert _n_judgments(db, pair_id) == 2 and _count(db, Judgment, pair_id=pair_id) == 2


def test_a_control_pair_judgment_can_be_taken_back(db) -> None:  # noqa: ANN001
    _pairs(db, 2)
    storage.add_control_pairs(db, [storage.ControlSpec(messages=[{"role": "user", "content": "2+2?"}],
                                                       response_a="4", response_b="5", expected="a")])
    alice = storage.create_annotator(db, "alice", "password123")
    shown = storage.annotator_screen(db, alice.id, lease_seconds=LEASE, since=SINCE, control_rate=1.0,
                                     rng=random.Random(0))
    assert {shown.pair.left_text, shown.pair.right_text} == {"4", "5"}
    saved = storage.submit_verdict(db, alice.id, token=shown.token, pick="left", lease_seconds=LEASE, since=SINCE)
    assert len(storage.control_judgments(db)) == 1
    undone = _undo(db, alice.id, saved.judgment_id)
    assert undone.outcome == "undone" and undone.pair.pair_id == shown.pair.pair_id
    assert storage.control_judgments(db) == [] and _n_judgments(db, shown.pair.pair_id) == 0


def test_racing_undos_take_the_judgment_back_once(db) -> None:  # noqa: ANN001
    (pair_id,) = _pairs(db, 1, k=3)
    alice = storage.create_annotator(db, "alice", "password123")
    saved = _judge(db, alice.id)
    start = threading.Barrier(4)
    outcomes: list[str] = []

    def press() -> None:
        start.wait()
        outcomes.append(_undo(db, alice.id, saved.judgment_id).outcome)

    threads = [threading.Thread(target=press) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(outcomes) == ["undo_too_late"] * 3 + ["undone"]
    assert _n_judgments(db, pair_id) == 0 and _count(db, Judgment) == 0
    assert len(storage.audit_events(db, action=storage.UNDO_ACTION)) == 1
    assert _count(db, Lease, annotator_id=alice.id) == 1
