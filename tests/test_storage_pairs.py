"""Serving pairs and recording judgments: the k-slot leases, idempotency and concurrency.

Every test runs on SQLite and on PostgreSQL (the `db` fixture)."""

from __future__ import annotations

import random
import threading
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from sqlalchemy import update
from sqlalchemy.exc import IntegrityError
from sqlmodel import func, select

from storage import (
    Annotator,
    Database,
    Judgment,
    JudgmentError,
    Lease,
    Pair,
    Prompt,
    SlotTaken,
    add_prompts,
    content_hash,
    create_annotator,
    hash_password,
    next_pair_for,
    record_generations,
    record_judgment,
    set_active,
    skip_pair,
    utcnow,
)


def make_pairs(db: Database, n: int, *, k: int = 1, priority: int = 0) -> list[int]:
    """`n` pairs, each on its own prompt, with sample texts `A<prompt id>` and `B<prompt id>`."""
    convs = [[{"role": "user", "content": f"question {uuid.uuid4().hex}"}] for _ in range(n)]
    add_prompts(db, convs)
    with db.session() as s:
        prompt_ids = [s.exec(select(Prompt.id).where(Prompt.content_hash == content_hash(c))).one() for c in convs]
    return [
        record_generations(db, prompt_id=pid, policy_version_id=0, responses=[(f"A{pid}", 2), (f"B{pid}", 3)],
                           gen_params={}, pairs=[(0, 1)], judgments_wanted=k, priority=priority)[0].id
        for pid in prompt_ids
    ]


def make_annotators(db: Database, n: int) -> list[int]:
    """`n` active annotators sharing one precomputed hash (scrypt per user would dominate the run time)."""
    digest = hash_password("password123")
    with db.session() as s:
        users = [Annotator(username=f"u{i}-{uuid.uuid4().hex[:6]}", password_hash=digest) for i in range(n)]
        s.add_all(users)
        s.flush()
        return [u.id for u in users]


def n_judgments(db: Database, pair_id: int) -> int:
    with db.session() as s:
        return s.get(Pair, pair_id).n_judgments


def judgment_count(db: Database) -> int:
    with db.session() as s:
        return s.exec(select(func.count()).select_from(Judgment)).one()


# -- the unique (pair, annotator) constraint and idempotent record_judgment -----------------------


def test_second_judgment_row_for_same_pair_and_annotator_violates_unique_constraint(db):
    (pair_id,) = make_pairs(db, 1)
    (ann,) = make_annotators(db, 1)
    with db.session() as s:
        s.add(Judgment(pair_id=pair_id, annotator_id=ann, choice="a"))
    with pytest.raises(IntegrityError):
        with db.session() as s:
            s.add(Judgment(pair_id=pair_id, annotator_id=ann, choice="b"))
    assert judgment_count(db) == 1


def test_record_judgment_is_idempotent(db):
    (pair_id,) = make_pairs(db, 1)
    (ann,) = make_annotators(db, 1)
    assert next_pair_for(db, ann).pair_id == pair_id
    first, created = record_judgment(db, pair_id=pair_id, annotator_id=ann, choice="a", strength="clear",
                                     rationale="  more precise  ")
    assert created and first.rationale == "more precise" and first.strength == "clear"
    again, created_again = record_judgment(db, pair_id=pair_id, annotator_id=ann, choice="b")
    assert created_again is False
    assert again.id == first.id and again.choice == "a"
    assert n_judgments(db, pair_id) == 1
    assert judgment_count(db) == 1
    with db.session() as s:  # the lease is released once judged
        assert s.exec(select(Lease).where(Lease.pair_id == pair_id)).first() is None


def test_concurrent_twin_submissions_create_one_row(db):
    (pair_id,) = make_pairs(db, 1)
    (ann,) = make_annotators(db, 1)
    next_pair_for(db, ann)
    barrier = threading.Barrier(8)

    def submit(_: int) -> tuple[int, bool]:
        barrier.wait()
        judgment, created = record_judgment(db, pair_id=pair_id, annotator_id=ann, choice="tie")
        return judgment.id, created

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(submit, range(8)))
    assert sum(created for _, created in results) == 1
    assert len({jid for jid, _ in results}) == 1
    assert judgment_count(db) == 1 and n_judgments(db, pair_id) == 1


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"choice": "left"}, "choice"),
        ({"choice": "a", "strength": "huge"}, "strength"),
        ({"choice": "a", "rationale": "x" * 5001}, "rationale"),
        ({"choice": "a", "pair_id": 999_999}, "does not exist"),
    ],
)
def test_invalid_judgment_is_refused_and_writes_nothing(db, kwargs, message):
    (pair_id,) = make_pairs(db, 1)
    (ann,) = make_annotators(db, 1)
    next_pair_for(db, ann)
    with pytest.raises(JudgmentError, match=message):
        record_judgment(db, **{"pair_id": pair_id, "annotator_id": ann, **kwargs})
    assert judgment_count(db) == 0 and n_judgments(db, pair_id) == 0


def test_disabled_annotator_cannot_judge(db):
    (pair_id,) = make_pairs(db, 1)
    user = create_annotator(db, "carol", "password123")
    next_pair_for(db, user.id)
    set_active(db, "carol", False)
    with pytest.raises(JudgmentError, match="disabled"):
        record_judgment(db, pair_id=pair_id, annotator_id=user.id, choice="a")
    with pytest.raises(JudgmentError, match="disabled"):
        next_pair_for(db, user.id)
    assert judgment_count(db) == 0 and n_judgments(db, pair_id) == 0


def test_pair_never_served_to_annotator_is_refused(db):
    (pair_id,) = make_pairs(db, 1)
    ann, other = make_annotators(db, 2)
    assert next_pair_for(db, other).pair_id == pair_id
    with pytest.raises(JudgmentError, match="not served"):
        record_judgment(db, pair_id=pair_id, annotator_id=ann, choice="a")
    assert judgment_count(db) == 0 and n_judgments(db, pair_id) == 0
    # An operator import may bypass serving explicitly, but not take a slot another annotator's
    # live lease holds (k means k: that annotator's judgment would be one too many).
    with pytest.raises(SlotTaken):
        record_judgment(db, pair_id=pair_id, annotator_id=ann, choice="a", require_served=False)
    skip_pair(db, pair_id=pair_id, annotator_id=other)
    judgment, created = record_judgment(db, pair_id=pair_id, annotator_id=ann, choice="a", require_served=False)
    assert created and judgment.left_side == "a" and n_judgments(db, pair_id) == 1


# -- next_pair_for: leases, k slots, skips, priority, expiry -------------------------------------


def test_k1_two_annotators_never_share_a_live_pair(db):
    p1, p2 = make_pairs(db, 2)
    alice, bob, carol = make_annotators(db, 3)
    served_a, served_b = next_pair_for(db, alice), next_pair_for(db, bob)
    assert {served_a.pair_id, served_b.pair_id} == {p1, p2}
    assert next_pair_for(db, carol) is None


def test_same_annotator_gets_same_pair_and_sides_until_judged(db):
    p1, p2 = make_pairs(db, 2)
    (ann,) = make_annotators(db, 1)
    first = next_pair_for(db, ann, rng=random.Random(1))
    for seed in range(2, 8):  # a different rng must not re-roll the sides of a live lease
        again = next_pair_for(db, ann, rng=random.Random(seed))
        assert (again.pair_id, again.left_side, again.left_text) == (first.pair_id, first.left_side, first.left_text)
    record_judgment(db, pair_id=first.pair_id, annotator_id=ann, choice="a")
    second = next_pair_for(db, ann)
    assert second.pair_id == ({p1, p2} - {first.pair_id}).pop()
    record_judgment(db, pair_id=second.pair_id, annotator_id=ann, choice="b")
    assert next_pair_for(db, ann) is None


def test_k2_serves_two_annotators_but_not_a_third(db):
    (pair_id,) = make_pairs(db, 1, k=2)
    alice, bob, carol = make_annotators(db, 3)
    assert next_pair_for(db, alice).pair_id == pair_id
    assert next_pair_for(db, bob).pair_id == pair_id
    assert next_pair_for(db, carol) is None
    record_judgment(db, pair_id=pair_id, annotator_id=alice, choice="a")
    assert next_pair_for(db, alice) is None  # judged: never again for alice
    assert next_pair_for(db, carol) is None  # one judgment + bob's live lease fill both slots
    record_judgment(db, pair_id=pair_id, annotator_id=bob, choice="a")
    assert n_judgments(db, pair_id) == 2
    assert next_pair_for(db, carol) is None and next_pair_for(db, alice) is None


def test_skip_is_permanent_for_that_annotator_and_frees_the_slot(db):
    (pair_id,) = make_pairs(db, 1)
    alice, bob = make_annotators(db, 2)
    assert next_pair_for(db, alice).pair_id == pair_id
    assert next_pair_for(db, bob) is None
    skip_pair(db, pair_id=pair_id, annotator_id=alice)
    skip_pair(db, pair_id=pair_id, annotator_id=alice)  # a double click is harmless
    assert next_pair_for(db, alice) is None
    assert next_pair_for(db, bob).pair_id == pair_id
    with pytest.raises(JudgmentError, match="not served"):
        record_judgment(db, pair_id=pair_id, annotator_id=alice, choice="a")


def test_higher_priority_is_served_first(db):
    low = make_pairs(db, 1, priority=0)[0]
    high = make_pairs(db, 1, priority=5)[0]
    mid = make_pairs(db, 1, priority=1)[0]
    (ann,) = make_annotators(db, 1)
    order = []
    while (served := next_pair_for(db, ann)) is not None:
        order.append(served.pair_id)
        record_judgment(db, pair_id=served.pair_id, annotator_id=ann, choice="tie")
    assert order == [high, mid, low]


def test_expired_lease_frees_the_slot(db):
    (pair_id,) = make_pairs(db, 1)
    alice, bob, carol = make_annotators(db, 3)
    assert next_pair_for(db, alice, lease_seconds=-1).pair_id == pair_id
    assert next_pair_for(db, bob).pair_id == pair_id
    assert next_pair_for(db, alice) is None  # bob's live lease now holds the only slot
    # The same through the clock: bob's lease ends in the past.
    with db.session() as s:
        s.exec(update(Lease).where(Lease.annotator_id == bob).values(expires_at=utcnow() - timedelta(minutes=1)))
    assert next_pair_for(db, carol).pair_id == pair_id


def test_left_side_recorded_is_the_side_served(db):
    pair_ids = make_pairs(db, 12)
    (ann,) = make_annotators(db, 1)
    rng = random.Random(1)
    sides = {}
    with db.session() as s:
        prompt_of = {p.id: p.prompt_id for p in s.exec(select(Pair).where(Pair.id.in_(pair_ids)))}
    while (served := next_pair_for(db, ann, rng=rng)) is not None:
        other = "b" if served.left_side == "a" else "a"
        prompt_id = prompt_of[served.pair_id]
        assert (served.left_text, served.right_text) == (
            f"{served.left_side.upper()}{prompt_id}", f"{other.upper()}{prompt_id}")
        judgment, _ = record_judgment(db, pair_id=served.pair_id, annotator_id=ann, choice="a")
        assert judgment.left_side == served.left_side
        sides[served.pair_id] = served.left_side
    assert set(sides) == set(pair_ids)
    assert set(sides.values()) == {"a", "b"}  # seeded rng: both orders occur in 12 draws
    with db.session() as s:
        stored = dict(s.exec(select(Judgment.pair_id, Judgment.left_side)).all())
    assert stored == sides


# -- concurrency ----------------------------------------------------------------------------------


def test_concurrent_annotators_with_retries_keep_counts_exact(db):
    n_pairs, k, n_threads = 100, 2, 20
    pair_ids = make_pairs(db, n_pairs, k=k)
    annotators = make_annotators(db, n_threads)

    def label(index: int) -> list[bool]:
        ann, rng, created_flags = annotators[index], random.Random(index), []
        while (served := next_pair_for(db, ann, rng=rng)) is not None:
            choice = rng.choice(["a", "b", "tie", "both_bad"])
            first, created = record_judgment(db, pair_id=served.pair_id, annotator_id=ann, choice=choice)
            created_flags.append(created)
            for _ in range(2):  # the client retries: same row, nothing new
                again, created_again = record_judgment(db, pair_id=served.pair_id, annotator_id=ann, choice=choice)
                assert again.id == first.id
                created_flags.append(created_again)
        return created_flags

    with ThreadPoolExecutor(n_threads) as pool:
        futures = [pool.submit(label, i) for i in range(n_threads)]
        flags = [flag for f in futures for flag in f.result()]  # .result() re-raises any escaped exception

    # A thread may stop early on PostgreSQL when the last open pairs were row-locked by others
    # (SKIP LOCKED); a sequential sweep shows no slot was lost to a dangling lease.
    flags += [flag for i in range(n_threads) for flag in label(i)]

    with db.session() as s:
        rows = s.exec(select(Judgment.pair_id, Judgment.annotator_id)).all()
        stored = dict(s.exec(select(Pair.id, Pair.n_judgments)).all())
    assert len(rows) == sum(flags)
    assert len(set(rows)) == len(rows)
    per_pair = Counter(pair_id for pair_id, _ in rows)
    assert all(stored[p] == per_pair[p] for p in pair_ids)
    assert max(stored.values()) <= k
    assert sum(stored.values()) == n_pairs * k
