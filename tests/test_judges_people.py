"""A judge among people: an account of kind ai that never logs in (through the running app's /login too) and holds
no role; its judgments in the same table with confidence and rationale, taking no person's slot; hints on the page
and agreement counted without them; exports marking who judged; training capped by reward.ai_weight."""

from __future__ import annotations

import json
import random
from datetime import timedelta

import httpx
import pytest
from judge_helpers import seed_pairs

import storage
from rlhf_core.judges.figures import judge_figures
from rlhf_core.service.actor import ActionRefused, Actor
from rlhf_core.service.judges import add_judge
from rlhf_core.training.reward_data import PreferenceExample, capped_ai_weight, people_held_out
from storage import AIJudgment, UserError

ACTOR = Actor("cli:test", "cli")


def judge_everything(db, name: str, right: bool = True) -> None:  # noqa: ANN001
    """`name` (added if missing) judges every train pair: the longer side when `right`, else the other."""
    judge = storage.get_judge(db, name) or add_judge(db, name, "openai", ACTOR, base_url="http://127.0.0.1:9/v1",
                                                     model="m")
    rows = storage.pairs_for_judge(db, judge.annotator_id, 1000, kinds=("train",))
    verdicts = [AIJudgment(p.pair_id, "a" if (len(p.text_a) > len(p.text_b)) == right else "b", 0.9, "because")
                for p in rows]
    assert storage.record_ai_judgments(db, judge.annotator_id, verdicts, stats={"left_picks": 3,
                                                                                "decisive_answers": 4}) == len(rows)


def test_a_judge_never_logs_in_and_holds_no_role(db) -> None:
    judge = add_judge(db, "gpt", "openai", ACTOR, base_url="http://127.0.0.1:9/v1", model="m")
    account = storage.get_annotator(db, "gpt")
    assert (account.kind, account.role) == ("ai", "none")
    for guess in ("", "password123", account.password_hash, storage.judges.NO_PASSWORD):
        assert storage.authenticate(db, "gpt", guess) is None
    assert storage.start_session(db, "gpt", "token-x", lifetime_s=60) is None
    with pytest.raises(UserError, match="AI judge"):
        storage.set_role(db, "gpt", "operator")
    with pytest.raises(UserError, match="AI judge"):
        storage.set_password(db, "gpt", "a-new-password")
    # Even a session row forged into the database is no login for it.
    from sqlalchemy import insert

    from storage.accounts.sessions import SES, hash_token

    with db.transaction() as conn:
        now = storage.utcnow()
        conn.execute(insert(SES).values(token_hash=hash_token("forged"), annotator_id=judge.annotator_id,
                                        created_at=now, expires_at=now + timedelta(hours=1)))
    assert storage.session_user(db, "forged") is None
    from rlhf_core.service.accounts import change_role

    with pytest.raises(ActionRefused, match="AI judge"):
        change_role(db, "gpt", "annotator", ACTOR)


def test_the_running_apps_login_refuses_a_judge_whatever_the_password(tmp_path) -> None:
    from browser_utils import start_app

    app = start_app(tmp_path / "ws", users={"alice": "annotator"})
    try:
        add_judge(app.db, "gpt", "openai", ACTOR, base_url="http://127.0.0.1:9/v1", model="m")
        with httpx.Client(base_url=app.url, timeout=30) as client:
            for guess in ("", storage.judges.NO_PASSWORD, "password123"):
                assert client.post("/login", data={"username": "gpt", "password": guess}).status_code == 400
    finally:
        app.close()


def test_judgments_share_the_table_but_take_no_slot_and_hints_are_left_out_of_agreement(db) -> None:
    pairs = seed_pairs(db, 4)
    judge_everything(db, "gpt")
    rows = [r for r in storage.judgment_rows(db) if r.annotator == "gpt"]
    assert len(rows) == 4 and {(r.annotator_kind, r.confidence, r.rationale) for r in rows} == {("ai", 0.9, "because")}
    assert storage.status_counts(db)["counts"]["pairs_open"] == 4  # every pair still wants its person
    assert storage.judge_hint(db, pairs[0]).judge == "gpt"
    alice = storage.create_annotator(db, "alice", "password123")
    since = storage.utcnow() - timedelta(days=1)
    screen = storage.annotator_screen(db, alice.id, lease_seconds=60, since=since, rng=random.Random(1))
    hinted = storage.submit_verdict(db, alice.id, token=screen.token, pick="left", lease_seconds=60, since=since,
                                    hints=True, rng=random.Random(1))
    plain = storage.submit_verdict(db, alice.id, token=hinted.token, pick="left", lease_seconds=60, since=since)
    flags = {r.pair_id: r.hint_shown for r in storage.judgment_rows(db) if r.annotator == "alice"}
    assert sorted(flags.values()) == [False, True] and flags[screen.pair.pair_id] is True
    assert plain.created
    assert storage.judgments_since_last_round(db) == 2  # people's: a judge's judgments start no round
    figures = judge_figures(db)["gpt"]
    assert figures["shared"] == 1  # the judgment made under the hint is not counted
    assert figures["left_bias"] == 0.75 and figures["judgments"] == 4


def test_kappa_with_people_on_shared_pairs(db) -> None:
    from conftest import seed_judged_pairs

    seed_judged_pairs(db, 12, {"honest": True})
    judge = add_judge(db, "good", "openai", ACTOR, base_url="http://127.0.0.1:9/v1", model="m")
    bad = add_judge(db, "bad", "openai", ACTOR, base_url="http://127.0.0.1:9/v1", model="m")
    for who, right in ((judge, True), (bad, False)):
        rows = storage.pairs_for_judge(db, who.annotator_id, 100, kinds=("train",))
        verdicts = [AIJudgment(p.pair_id, "a" if ("banana" in p.text_a) == right else "b", 1.0, None) for p in rows]
        storage.record_ai_judgments(db, who.annotator_id, verdicts)
    figures = judge_figures(db)
    assert figures["good"]["kappa"] == 1.0 and figures["good"]["shared"] == 12
    # People always picked a (the banana side); a judge always saying b agrees with them never: no better than chance.
    assert figures["bad"]["kappa"] == 0.0 and figures["bad"]["kappa_ci"][1] < 1.0


def test_exports_say_who_judged_and_can_leave_the_judges_out(db, tmp_path) -> None:
    from rlhf_core.data.export import export_preferences

    seed_pairs(db, 6)
    judge_everything(db, "gpt")
    alice = storage.create_annotator(db, "alice", "password123")
    for _ in range(3):
        served = storage.next_pair_for(db, alice.id)  # alice agrees with the judge: the longer side
        longer_left = len(served.left_text) > len(served.right_text)
        choice = storage.choice_from_screen("left" if longer_left else "right", served.left_side)
        storage.record_judgment(db, pair_id=served.pair_id, annotator_id=alice.id, choice=choice)
    export_preferences(db, tmp_path / "all", fmt="jsonl", test_fraction=0.0, include_ties=True)
    rows = [json.loads(line) for line in (tmp_path / "all" / "train.jsonl").read_text().splitlines()]
    kinds = sorted(r["annotator_kind"] for r in rows)
    assert kinds.count("ai") == 3 and kinds.count("human+ai") == 3
    mixed = next(r for r in rows if r["annotator_kind"] == "human+ai")
    assert dict(zip(mixed["annotators"], mixed["annotator_kinds"])) == {"alice": "human", "gpt": "ai"}
    people = export_preferences(db, tmp_path / "people", fmt="jsonl", test_fraction=0.0, include_ties=True,
                                exclude_ai=True)
    rows = [json.loads(line) for line in (tmp_path / "people" / "train.jsonl").read_text().splitlines()]
    assert people.n_rows == 3 and {r["annotator_kind"] for r in rows} == {"human"}


def example(ai: bool, weight: float = 1.0, prompt: int = 1) -> PreferenceExample:
    return PreferenceExample([{"role": "user", "content": "q"}], "x", "y", None, prompt, weight=weight, ai=ai,
                             annotator="gpt" if ai else "alice")


def test_ai_weight_caps_ai_judgments_and_held_out_figures_count_people() -> None:
    capped = capped_ai_weight([example(True, 1.4), example(True, 0.2), example(False, 1.4)], 0.5)
    assert [e.weight for e in capped] == [0.5, 0.2, 1.4]
    assert [e.ai for e in capped_ai_weight([example(True), example(False)], 0.0)] == [False]
    assert [e.ai for e in people_held_out([example(True), example(False)])] == [False]
    assert len(people_held_out([example(True), example(True)])) == 2  # a judge alone: its labels are all there is
