"""Control pairs: importing them (and refusing malformed files whole), serving them at
`labeling.control_rate` as ordinary-looking pairs never shown twice to one annotator, and keeping
them out of the open pool, training data and exports.

Every database test runs on SQLite and on PostgreSQL (the `db` fixture)."""

from __future__ import annotations

import json
import random
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from conftest import import_kind
from sqlalchemy import update
from sqlmodel import select

import storage
from rlhf_core.data.control_files import read_control_file
from rlhf_core.data.export import export_preferences
from rlhf_core.data.file_checks import InputFileError
from rlhf_core.service.dashboard import annotation_quality
from storage import ControlPair, Lease, Pair, Prompt


def regular_pairs(db: storage.Database, n: int, *, k: int = 1) -> list[int]:
    """`n` training pairs, each on its own prompt."""
    convs = [[{"role": "user", "content": f"question {uuid.uuid4().hex}"}] for _ in range(n)]
    storage.add_prompts(db, convs)
    with db.session() as s:
        ids = [s.exec(select(Prompt.id).where(Prompt.content_hash == storage.content_hash(c))).one() for c in convs]
    return [storage.record_generations(db, prompt_id=pid, policy_version_id=0, responses=[(f"A{pid}", 1),
                                       (f"B{pid}", 1)], gen_params={}, pairs=[(0, 1)], judgments_wanted=k)[0].id
            for pid in ids]


def controls(n: int, expected: str = "a") -> list[storage.ControlSpec]:
    return [storage.ControlSpec(messages=[{"role": "user", "content": f"control question {i}"}],
                                response_a=f"right answer {i}", response_b=f"wrong answer {i}", expected=expected)
            for i in range(n)]


def control_ids(db: storage.Database) -> set[int]:
    with db.session() as s:
        return set(s.exec(select(ControlPair.pair_id)).all())


def annotator(db: storage.Database, name: str | None = None) -> int:
    return storage.create_annotator(db, name or f"u-{uuid.uuid4().hex[:6]}", "password123").id


# -- import ----------------------------------------------------------------------------------------


def test_jsonl_and_csv_files_import_and_a_repeat_adds_nothing(db, tmp_path: Path) -> None:
    jsonl = tmp_path / "controls.jsonl"
    jsonl.write_text(
        json.dumps({"prompt": "2 + 2?", "response_a": "4", "response_b": "5", "expected": "a"}) + "\n\n"
        + json.dumps({"messages": [{"role": "system", "content": "be kind"}, {"role": "user", "content": "hi"}],
                      "response_a": "Go away.", "response_b": "Hello!", "expected": "B", "note": "ignored"}) + "\n",
        encoding="utf-8")
    csv_file = tmp_path / "controls.csv"
    csv_file.write_text('prompt,response_a,response_b,expected\n"Capital of France, please?",Paris,Rome,a\n'
                        "Say something,ok,fine,tie\n", encoding="utf-8")
    first = import_kind(db, "controls", jsonl, imported_by="olga")
    assert (first.added, first.duplicates) == (2, 0)
    assert import_kind(db, "controls", csv_file, imported_by="olga").added == 2
    again = import_kind(db, "controls", jsonl, imported_by="olga")
    assert (again.added, again.duplicates) == (0, 2)
    assert storage.count_control_pairs(db) == 4

    with db.session() as s:
        rows = s.exec(select(ControlPair, Pair, Prompt).join(Pair, Pair.id == ControlPair.pair_id)
                      .join(Prompt, Prompt.id == Pair.prompt_id).order_by(ControlPair.id)).all()
    assert [c.expected for c, _, _ in rows] == ["a", "b", "a", "tie"]
    assert {(p.kind, p.judgments_wanted, p.selection) for _, p, _ in rows} == {("control", 0, "control")}
    assert {pr.split for _, _, pr in rows} == {"control"}
    assert rows[0][0].imported_by == "olga" and rows[2][0].source == "controls.csv"
    assert json.loads(rows[1][2].messages_json)[0] == {"role": "system", "content": "be kind"}
    # Control prompts are no training or eval prompts, and nothing of them is open.
    assert storage.list_prompts(db, split="train") == [] and storage.list_prompts(db, split="eval") == []
    assert storage.prompts_needing_pairs(db, limit=10) == []
    assert storage.status_counts(db)["counts"]["pairs_open"] == 0 and storage.open_pair_count(db) == 0


def test_a_control_prompt_does_not_shadow_the_same_training_prompt(db, tmp_path: Path) -> None:
    storage.add_control_pairs(db, controls(1))
    result = storage.add_prompts(db, [[{"role": "user", "content": "control question 0"}]])
    assert result.added == 1
    assert len(storage.list_prompts(db, split="train")) == 1


GOOD = '{"prompt": "p", "response_a": "x", "response_b": "y", "expected": "a"}\n'
HEADER = "prompt,response_a,response_b,expected\n"
MALFORMED = [
    ("bad.jsonl", GOOD + '{"prompt": "p", "response_a": \n', ":2: not valid JSON"),
    ("missing.jsonl", GOOD + GOOD.replace('"x"', '"x2"') + '{"prompt": "p", "response_a": "x"}\n',
     ":3: no 'response_b' field"),
    ("expected.jsonl", GOOD.replace('"a"}', '"c"}'), ":1: expected must be one of a, b, tie, both_bad, not 'c'"),
    ("latin1.jsonl", GOOD.encode() + '{"prompt": "caf\xe9"}\n'.encode("latin-1"), ":2: not UTF-8 text"),
    ("bell.jsonl", GOOD.replace('"x"', '"x\\u0007"'), ":1: response_a contains the control character U+0007"),
    ("list.jsonl", GOOD + "[1, 2]\n", ":2: expected an object"),
    ("number.jsonl", GOOD.replace('"y"', "7"), ":1: 'response_b' must be text, not int"),
    ("same.jsonl", GOOD.replace('"y"', '"x"'), ":1: response_a and response_b are the same text"),
    ("empty_response.jsonl", GOOD.replace('"x"', '"  "'), ":1: 'response_a' is empty"),
    ("assistant_last.jsonl", GOOD + json.dumps({"messages": [{"role": "assistant", "content": "hi"}],
                                                "response_a": "x", "response_b": "y", "expected": "a"}) + "\n",
     ":2: the last message must be from the user"),
    ("empty.jsonl", "\n\n", "no control pairs found"),
    ("controls.txt", GOOD, "unknown format .txt"),
    ("quote.csv", HEADER + "p,x,y,a\n" + 'p,"x,y,a\nq,x,y,b\n', ":3: malformed CSV"),
    ("ragged.csv", HEADER + "p,x,y\n", ":2: 3 fields where the header has 4"),
    ("no_expected.csv", "prompt,response_a,response_b\np,x,y\n", ":1: a CSV file needs the column(s) expected"),
    ("no_prompt.csv", "question,response_a,response_b,expected\np,x,y,a\n", ":1: a CSV file needs a 'prompt' column"),
    ("messages.csv", "messages,response_a,response_b,expected\n" + '"[{""role"": ""user""",x,y,a\n',
     ":2: the messages cell is not valid JSON"),
]


@pytest.mark.parametrize(("name", "content", "message"), MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_control_file_is_refused_whole_with_one_line_naming_the_line(
        db, tmp_path: Path, name: str, content: str | bytes, message: str) -> None:
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    with pytest.raises(InputFileError) as caught:
        import_kind(db, "controls", path, imported_by="olga")
    text = str(caught.value)
    assert message in text and str(path) in text and "\n" not in text
    counts = storage.status_counts(db)["counts"]
    assert storage.count_control_pairs(db) == 0 and counts["prompts"] == counts["samples"] == counts["pairs"] == 0


def test_prompt_longer_than_the_configured_limit_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "long.jsonl"
    path.write_text(GOOD + GOOD.replace('"p"', '"' + "x" * 50 + '"'), encoding="utf-8")
    too_long = r":2: the prompt is 50 characters long, over labeling.max_prompt_chars = 40"
    with pytest.raises(InputFileError, match=too_long):
        read_control_file(path, max_prompt_chars=40)


# -- serving ---------------------------------------------------------------------------------------


def test_controls_are_served_at_about_the_configured_rate_and_never_twice(db) -> None:
    regular_pairs(db, 320)
    storage.add_control_pairs(db, controls(150))
    known = control_ids(db)
    user, rng, rate, serves = annotator(db), random.Random(7), 0.2, 300
    served_controls: list[int] = []
    sides = set()
    for _ in range(serves):
        served = storage.next_pair_for(db, user, rng=rng, control_rate=rate)
        assert served is not None
        if served.pair_id in known:
            served_controls.append(served.pair_id)
            sides.add(served.left_side)
        storage.record_judgment(db, pair_id=served.pair_id, annotator_id=user, choice="a")
    # Binomial(300, 0.2): mean 60, sd 6.9; the seeded draw must land well inside 4 sd.
    assert abs(len(served_controls) / serves - rate) < 0.07, len(served_controls)
    assert len(served_controls) == len(set(served_controls))
    assert sides == {"a", "b"}  # random sides, as for any pair
    counts = storage.status_counts(db)["counts"]
    assert counts["pairs_open"] == 320 - (serves - len(served_controls))  # controls are no open pairs


def test_each_annotator_sees_each_control_once_then_only_ordinary_pairs(db) -> None:
    regular = set(regular_pairs(db, 12, k=3))
    storage.add_control_pairs(db, controls(4))
    known = control_ids(db)
    for name in ("ann", "bea"):
        user, rng = annotator(db, name), random.Random(name)
        seen = []
        for _ in range(6):
            served = storage.next_pair_for(db, user, rng=rng, control_rate=1.0)
            seen.append(served.pair_id)
            storage.record_judgment(db, pair_id=served.pair_id, annotator_id=user, choice="b")
        assert set(seen[:4]) == known and set(seen[4:]) <= regular, name

    # A control shown but neither judged nor skipped (its lease ran out) is not shown again either.
    cy = annotator(db, "cy")
    expired = storage.next_pair_for(db, cy, rng=random.Random(1), control_rate=1.0).pair_id
    with db.session() as s:
        s.exec(update(Lease).where(Lease.annotator_id == cy).values(expires_at=storage.utcnow() - timedelta(1)))
    skipped = storage.next_pair_for(db, cy, rng=random.Random(2), control_rate=1.0).pair_id
    storage.skip_pair(db, pair_id=skipped, annotator_id=cy)
    judged = []
    while (served := storage.next_pair_for(db, cy, control_rate=1.0)).pair_id in known:
        judged.append(served.pair_id)
        storage.record_judgment(db, pair_id=served.pair_id, annotator_id=cy, choice="a")
    assert {expired, skipped} <= known and expired != skipped
    assert sorted(judged) == sorted(known - {expired, skipped})


def test_controls_alone_are_never_served(db) -> None:
    storage.add_control_pairs(db, controls(3))
    user = annotator(db)
    assert storage.next_pair_for(db, user, control_rate=1.0) is None
    (pair,) = regular_pairs(db, 1)
    served = storage.next_pair_for(db, user, control_rate=0.0)
    assert served.pair_id == pair


def test_control_judgments_stay_out_of_training_exports_agreement_and_round_triggers(db, tmp_path: Path) -> None:
    regular = regular_pairs(db, 6)
    storage.add_control_pairs(db, controls(6))
    user, rng = annotator(db, "ann"), random.Random(3)
    while (served := storage.next_pair_for(db, user, rng=rng, control_rate=0.5)) is not None:
        storage.record_judgment(db, pair_id=served.pair_id, annotator_id=user, choice="a")
    judged_controls = [j for j in storage.control_judgments(db) if j.annotator == "ann"]
    assert len(judged_controls) > 0
    training = storage.judgment_rows(db, kinds=("train",))  # what reward-model training reads
    assert sorted(r.pair_id for r in training) == regular
    assert annotation_quality(db)["judgments"] == len(training)
    assert storage.judgments_since_last_round(db) == len(training)  # controls do not trigger automatic rounds
    result = export_preferences(db, tmp_path / "out", fmt="jsonl", test_fraction=0.0)
    exported = [json.loads(line) for line in (tmp_path / "out" / "train.jsonl").read_text().splitlines()]
    assert result.n_rows == len(exported) == len(training)
    assert {row["pair_id"] for row in exported}.isdisjoint(control_ids(db))
