"""k means k: a judgment on an expired lease is accepted only while the pair still has a slot nobody
else holds; otherwise it is refused (with a clear sentence on the page) and nothing is written.
A pair never ends with more than k judgments, however submissions race (SQLite, then PostgreSQL)."""

from __future__ import annotations

import threading
from datetime import timedelta
from pathlib import Path

import pytest
from browser_utils import add_pairs
from sqlmodel import select, update

from labeling_app import AppServices
from labeling_app.annotation import Annotation
from rlhf_core.workspace import init_workspace
from storage import (
    Database,
    Lease,
    Pair,
    SlotTaken,
    create_annotator,
    judgment_rows,
    next_pair_for,
    record_judgment,
    utcnow,
)


def users(db: Database, *names: str) -> list[int]:
    return [create_annotator(db, name, "password123").id for name in names]


def one_pair(db: Database, k: int) -> int:
    (pair_id,) = add_pairs(db, [("sample a", "sample b")])
    with db.session() as s:
        s.exec(update(Pair).where(Pair.id == pair_id).values(judgments_wanted=k))
    return pair_id


def expire(db: Database, annotator_id: int) -> None:
    with db.session() as s:
        s.exec(update(Lease).where(Lease.annotator_id == annotator_id)
               .values(expires_at=utcnow() - timedelta(seconds=1)))


def judgments_of(db: Database, pair_id: int) -> tuple[int, int]:
    """(rows, the pair's own count)"""
    with db.session() as s:
        count = s.exec(select(Pair.n_judgments).where(Pair.id == pair_id)).one()
    return sum(1 for r in judgment_rows(db) if r.pair_id == pair_id), count


def test_late_judgment_whose_slot_was_judged_by_someone_else_is_refused(db: Database) -> None:
    pair_id = one_pair(db, k=1)
    alice, bob = users(db, "alice", "bob")
    assert next_pair_for(db, alice).pair_id == pair_id
    expire(db, alice)
    assert next_pair_for(db, bob).pair_id == pair_id
    record_judgment(db, pair_id=pair_id, annotator_id=bob, choice="a")
    with pytest.raises(SlotTaken, match=f"pair #{pair_id} already has all the judgments it wants"):
        record_judgment(db, pair_id=pair_id, annotator_id=alice, choice="b")
    assert judgments_of(db, pair_id) == (1, 1)


def test_late_judgment_is_refused_while_another_annotator_holds_the_slot(db: Database) -> None:
    pair_id = one_pair(db, k=1)
    alice, bob = users(db, "alice", "bob")
    next_pair_for(db, alice)
    expire(db, alice)
    assert next_pair_for(db, bob).pair_id == pair_id  # bob's live lease now holds the only slot
    with pytest.raises(SlotTaken):
        record_judgment(db, pair_id=pair_id, annotator_id=alice, choice="b")
    assert record_judgment(db, pair_id=pair_id, annotator_id=bob, choice="a")[1]  # bob keeps what he was given
    assert judgments_of(db, pair_id) == (1, 1)


def test_late_judgment_is_accepted_while_the_pair_still_wants_it(db: Database) -> None:
    solo = one_pair(db, k=1)
    alice, bob, carol = users(db, "alice", "bob", "carol")
    next_pair_for(db, alice)
    expire(db, alice)  # nobody took the slot meanwhile
    judgment, created = record_judgment(db, pair_id=solo, annotator_id=alice, choice="tie")
    assert created and judgments_of(db, solo) == (1, 1)
    shared = one_pair(db, k=2)
    assert next_pair_for(db, bob).pair_id == shared
    expire(db, bob)
    assert next_pair_for(db, carol).pair_id == shared  # one live lease; one slot still free
    assert record_judgment(db, pair_id=shared, annotator_id=bob, choice="a")[1]
    assert record_judgment(db, pair_id=shared, annotator_id=carol, choice="b")[1]
    assert judgments_of(db, shared) == (2, 2)


def test_the_page_says_the_verdict_was_not_saved_and_shows_the_next_pair(tmp_path: Path, db: Database) -> None:
    ws, _ = init_workspace(tmp_path / "ws")
    pair_id = one_pair(db, k=1)
    bobs_next, alices_next = add_pairs(db, [("other a", "other b"), ("third a", "third b")])
    alice, bob = users(db, "alice", "bob")
    annotation = Annotation(ws, db, AppServices())

    class Who:
        def __init__(self, id: int) -> None:  # noqa: A002 - the attribute Annotation reads
            self.id = id

    shown = annotation.screen(Who(alice))
    assert shown.pair.pair_id == pair_id
    expire(db, alice)
    bobs = annotation.screen(Who(bob))
    assert bobs.pair.pair_id == pair_id
    annotation.judge(Who(bob), bobs.pair.token, "left")
    late = annotation.judge(Who(alice), shown.pair.token, "right")
    assert late.notice == (f"Not saved: your time on pair #{pair_id} ran out and it went to someone else. "
                           "Here is your next pair.")
    assert late.pair.pair_id == alices_next != bobs_next
    assert [(r.annotator, r.pair_id) for r in judgment_rows(db)] == [("bob", pair_id)]


@pytest.mark.parametrize("k", [1, 2])
def test_racing_late_judgments_never_exceed_k(db: Database, k: int) -> None:
    """Eight annotators whose leases on one pair all ran out submit at the same moment."""
    pair_id = one_pair(db, k=k)
    names = [f"late-{i}" for i in range(8)]
    ids = users(db, *names)
    for annotator in ids:  # each is served the pair once, in turn, and runs out of time
        assert next_pair_for(db, annotator).pair_id == pair_id
        expire(db, annotator)
    go, outcomes = threading.Barrier(len(ids)), []

    def submit(annotator: int) -> None:
        go.wait()
        try:
            outcomes.append(record_judgment(db, pair_id=pair_id, annotator_id=annotator, choice="a")[1])
        except SlotTaken:
            outcomes.append("refused")

    threads = [threading.Thread(target=submit, args=(a,)) for a in ids]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert outcomes.count(True) == k and outcomes.count("refused") == len(ids) - k
    assert judgments_of(db, pair_id) == (k, k)
