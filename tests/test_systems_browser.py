"""Imported pairs and the leaderboard in a real browser: an annotator judges imported pairs on the labeling page
like sampled ones (k judgments each, never the same pair twice, sides as the lease drew them), and an operator
uploads a pair file on the operator tab (a malformed one refused with its line, nothing written) and reads the
leaderboard's table and interval chart."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from browser_utils import (
    PAIR_SHOWN,
    RunningApp,
    choose_file,
    clear_file,
    login,
    open_console,
    shown_texts,
    wait_for_new_pair,
)
from conftest import import_kind
from sqlmodel import select

import storage
from storage import Judgment, Pair

pytestmark = [
    pytest.mark.browser,
    pytest.mark.filterwarnings("ignore:.*no_silent_downcasting", "ignore:The copy keyword is deprecated"),
]

playwright_api = pytest.importorskip("playwright.sync_api")


def pair_file(path: Path, n: int, systems: tuple[str, str] = ("alpha", "beta"), start: int = 0) -> Path:
    path.write_text("".join(json.dumps({"prompt": f"Question {i}?", "response_a": f"{systems[0]} answers {i}",
                                        "response_b": f"{systems[1]} answers {i}", "system_a": systems[0],
                                        "system_b": systems[1]}) + "\n" for i in range(start, start + n)),
                    encoding="utf-8")
    return path


def test_imported_pairs_are_judged_on_the_page_like_sampled_ones(app: RunningApp, page, tmp_path: Path) -> None:
    db = app.db
    import_kind(db, "pairs", pair_file(tmp_path / "arena.jsonl", 4), judgments_wanted=2)
    bob = storage.create_annotator(db, "bob", "password123").id
    login(page, app.url, "alice")
    page.wait_for_selector(PAIR_SHOWN)
    clicked: list[str] = []  # the system alice preferred, read from the text she saw on the left
    for _ in range(4):
        left, right = shown_texts(page)
        assert {left.split()[0], right.split()[0]} == {"alpha", "beta"}  # the imported responses, as written
        clicked.append(left.split()[0])
        page.click("#btn-left")
        if len(clicked) < 4:
            wait_for_new_pair(page, left)
    page.get_by_text("Nothing to judge right now").wait_for()  # never the same pair twice, k = 2 leaves them open
    with db.session() as s:
        alice = storage.get_annotator(db, "alice").id
        mine = s.exec(select(Judgment, Pair).join(Pair, Pair.id == Judgment.pair_id)
                      .where(Judgment.annotator_id == alice).order_by(Judgment.id)).all()
    assert len({p.id for _, p in mine}) == 4 and {p.kind for _, p in mine} == {"imported"}
    rows = {r.judgment_id: r for r in storage.judgment_rows(db, kinds=("imported",))}
    assert [rows[j.id].system_a if j.choice == "a" else rows[j.id].system_b for j, _ in mine] == clicked
    assert storage.open_pair_count(db) == 4  # each wants a second person
    while (served := storage.next_pair_for(db, bob, rng=random.Random(0))) is not None:
        storage.record_judgment(db, pair_id=served.pair_id, annotator_id=bob, choice="tie")
    with db.session() as s:
        assert s.exec(select(Pair.n_judgments)).all() == [2, 2, 2, 2]  # k means k
    assert storage.next_pair_for(db, bob) is None and storage.open_pair_count(db) == 0


def test_operator_uploads_pairs_and_reads_the_leaderboard(app: RunningApp, page, tmp_path: Path) -> None:
    db = app.db
    login(page, app.url, "olga")
    open_console(page)
    page.locator("#systems").get_by_text("Systems: imported pairs and leaderboard").first.click()
    page.locator("#leaderboard-note").get_by_text("No judged pair names two different systems yet").wait_for()

    bad = tmp_path / "bad.jsonl"
    bad.write_text(pair_file(tmp_path / "one.jsonl", 1).read_text() + '{"prompt": "p", "response_a": "x"}\n',
                   encoding="utf-8")
    choose_file(page, "pairs-file", bad)
    page.click("#btn-import-pairs")
    page.locator("#pairs-result").get_by_text("bad.jsonl:2").wait_for()
    refused = page.locator("#pairs-result").inner_text()
    assert "Not imported: bad.jsonl:2: no 'response_b' field" in refused and str(tmp_path) not in refused
    assert storage.status_counts(db)["counts"]["pairs"] == 0

    clear_file(page, "pairs-file", "bad.jsonl")
    good = pair_file(tmp_path / "arena.jsonl", 6)
    choose_file(page, "pairs-file", good)
    page.click("#btn-import-pairs")
    page.locator("#pairs-result").get_by_text("Imported 6 pairs as 'arena.jsonl'").wait_for()
    import_kind(db, "pairs", pair_file(tmp_path / "more.jsonl", 6, ("beta", "gamma"), start=10), judgments_wanted=1)
    judge = storage.create_annotator(db, "judge", "password123").id
    while (served := storage.next_pair_for(db, judge)) is not None:  # alpha > beta > gamma, one tie each
        text_a = served.left_text if served.left_side == "a" else served.right_text
        storage.record_judgment(db, pair_id=served.pair_id, annotator_id=judge,
                                choice="tie" if text_a.endswith((" 0", " 10")) else "a")

    page.click("#btn-leaderboard")
    page.locator("#leaderboard [role=gridcell]").filter(has_text="gamma").first.wait_for()
    rows = [[c.strip() for c in row.locator("[role=gridcell]").all_inner_texts()]
            for row in page.locator("#leaderboard [role=row]").all()]
    rows = [r for r in rows if r]
    assert [r[0] for r in rows] == ["alpha", "beta", "gamma"]
    assert rows[1][1] == "1000" and rows[1][5] == "12"  # the default baseline: the most judged system
    assert float(rows[0][1]) > 1000 > float(rows[2][1])
    chart = page.locator("#leaderboard-chart svg")
    assert chart.locator("circle.rating").count() == 3 and chart.locator("line.interval").count() == 3
    assert "ties count half a win" in page.locator("#leaderboard-note").inner_text()
    audit = [e.action for e in storage.audit_events(db, limit=10)]
    assert "pairs_import" in audit
