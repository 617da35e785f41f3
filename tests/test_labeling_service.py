"""The annotator flow without Gradio: side mapping through the lease, stale serves, the pool
top-up trigger, progress counts and inert rendering helpers."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from browser_utils import add_pairs

from labeling_app import AppServices, ensure_first_operator
from labeling_app.annotation import Annotation, parse_token
from labeling_app.render import plain_markdown, prompt_text
from rlhf_core.workspace import Workspace, init_workspace
from storage import (
    Database,
    Lease,
    authenticate,
    choice_from_screen,
    create_annotator,
    judgment_rows,
    next_pair_for,
    utcnow,
)


class CountingTopper:
    def __init__(self, fail: bool = False) -> None:
        self.calls, self.fail = 0, fail

    def request_top_up(self) -> None:
        self.calls += 1
        if self.fail:
            raise RuntimeError("sampler is down")


@pytest.fixture
def workspace(tmp_path: Path, db: Database) -> tuple[Workspace, Database]:
    """A workspace for its config, on the conftest `db` (SQLite, then PostgreSQL when configured):
    the serve token round-trips the lease time through each backend's datetime handling."""
    ws, _ = init_workspace(tmp_path / "ws")
    return ws, db


def test_choice_maps_screen_sides_to_the_pair_through_the_lease() -> None:
    assert [choice_from_screen(v, "a") for v in ("left", "right", "tie", "both_bad")] == ["a", "b", "tie", "both_bad"]
    assert [choice_from_screen(v, "b") for v in ("left", "right", "tie", "both_bad")] == ["b", "a", "tie", "both_bad"]
    assert parse_token("12:20250101T000000000001") == (12, "20250101T000000000001")
    assert parse_token("") is None and parse_token("x:1") is None and parse_token("12") is None


def test_a_stale_serve_with_redrawn_sides_is_refused(workspace: tuple[Workspace, Database]) -> None:
    ws, db = workspace
    user = create_annotator(db, "alice", "password123")
    add_pairs(db, [("sample a", "sample b")])
    annotation = Annotation(ws, db, AppServices())
    old = annotation.current_pair(user)
    old_left_side = "a" if old.left_text == "sample a" else "b"
    with db.session() as s:  # the lease runs out; the same pair is served again with the other side left
        lease = s.get(Lease, 1)
        lease.expires_at = utcnow()
        s.add(lease)
    seed = next(i for i in range(100) if random.Random(i).choice("ab") != old_left_side)
    next_pair_for(db, user.id, rng=random.Random(seed))

    stale = annotation.judge(user, old.token, "left")
    assert "shown again" in stale.notice and judgment_rows(db) == []
    fresh = stale.pair
    assert fresh.pair_id == old.pair_id and fresh.left_text != old.left_text
    done = annotation.judge(user, fresh.token, "left")
    assert done.notice.startswith("Saved") and done.pair is None
    (row,) = judgment_rows(db)
    assert (row.choice, row.left_side) == ("b" if old_left_side == "a" else "a",) * 2


def test_pool_top_up_only_after_a_judgment_below_the_threshold(workspace: tuple[Workspace, Database]) -> None:
    ws, db = workspace
    ws.config.sampling.pool_min_open_pairs = 3
    user = create_annotator(db, "alice", "password123")
    add_pairs(db, [(f"a{i}", f"b{i}") for i in range(5)])
    topper = CountingTopper()
    annotation = Annotation(ws, db, AppServices(pool_topper=topper))
    screen = annotation.screen(user)
    calls = []
    for verdict in ("tie", "left", "right"):  # open pairs after each: 4, 3, 2
        screen = annotation.judge(user, screen.pair.token, verdict)
        calls.append(topper.calls)
    assert calls == [0, 0, 1]
    screen = annotation.skip(user, screen.pair.token)  # skipping is not a judgment
    annotation.judge(user, "999:20250101T000000000000", "left")  # nor is a refused one
    assert topper.calls == 1
    failing = Annotation(ws, db, AppServices(pool_topper=CountingTopper(fail=True)))
    # A broken sampler loses no judgment.
    assert failing.judge(user, screen.pair.token, "both_bad").notice.startswith("Saved")
    assert len(judgment_rows(db)) == 4


def test_progress_counts_today_total_and_open_pairs(workspace: tuple[Workspace, Database]) -> None:
    ws, db = workspace
    alice, bob = create_annotator(db, "alice", "password123"), create_annotator(db, "bob", "password123")
    add_pairs(db, [(f"a{i}", f"b{i}") for i in range(4)])
    annotation = Annotation(ws, db, AppServices())
    for user in (alice, alice, bob):
        annotation.judge(user, annotation.current_pair(user).token, "tie")
    p = annotation.progress(alice)
    assert (p.judged_since, p.judged_total, p.pairs_open) == (2, 2, 1)


def test_first_operator_only_on_an_empty_database(workspace: tuple[Workspace, Database]) -> None:
    _, db = workspace
    username, password = ensure_first_operator(db)
    assert ensure_first_operator(db) is None
    assert authenticate(db, username, password).role == "operator"


def test_rendering_helpers_keep_text_inert() -> None:
    assert prompt_text([("user", "<b>hi</b>")]) == "<b>hi</b>"
    assert prompt_text([("system", "s"), ("user", "u"), ("assistant", "a")]) == (
        "── System ──\ns\n\n── User ──\nu\n\n── Assistant ──\na")
    assert plain_markdown("![x](http://h/p.png) <b>") == r"\!\[x\]\(http://h/p\.png\) &lt;b&gt;"
