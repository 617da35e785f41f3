"""The `openai` judge kind against a real OpenAI-compatible HTTP server on loopback (the simulated endpoint of
`rlhf_core.simulator.judge_endpoint`, FastAPI under uvicorn) through the official `openai` client and the worker's
judge job, on SQLite and PostgreSQL: both orders, confidence, routing, retries, the request cap, token counts, and
every fault failing the job with one line naming the judge while nothing is stored."""

from __future__ import annotations

import json
import random

import pytest
from judge_helpers import KEY_ENV, SECRET, seed_pairs, workspace
from sqlmodel import select

import storage
from rlhf_core.judges.figures import judge_figures
from rlhf_core.judges.routing import UNSURE_PRIORITY
from rlhf_core.loop.worker import Worker
from rlhf_core.service.actor import ActionRefused, Actor
from rlhf_core.service.judges import add_judge, request_judge_run, set_judge_enabled
from rlhf_core.simulator.judge_endpoint import JudgeBehaviour, SimulatedJudgeEndpoint, free_port

ACTOR = Actor("cli:test", "cli")


def run(ws, db, name: str = "gpt", **params):  # noqa: ANN001, ANN201
    job = request_judge_run(ws, db, name, ACTOR, **params)
    return Worker(ws, db, poll_seconds=0.01).run_until_done(job.id, timeout=120)


def ai_judgments(db) -> list[storage.JudgmentRow]:  # noqa: ANN001
    return [r for r in storage.judgment_rows(db, kinds=("train", "control")) if r.annotator_kind == "ai"]


def test_a_judge_labels_each_pair_in_both_orders_beside_people(db, tmp_path, monkeypatch) -> None:
    ws = workspace(tmp_path / "ws")
    pair_ids = seed_pairs(db, 6, controls=2)
    monkeypatch.setenv(KEY_ENV, SECRET)
    with SimulatedJudgeEndpoint(JudgeBehaviour(accuracy=1.0)) as endpoint:
        add_judge(db, "gpt", "openai", ACTOR, base_url=endpoint.base_url, model="sim", api_key_env=KEY_ENV)
        done = run(ws, db)
        assert done.status == "done", done.error
        assert endpoint.seen.requests == 2 * 8  # every pair (6 + 2 controls) in both orders
        assert set(endpoint.seen.authorizations) == {f"Bearer {SECRET}"}  # the key reached the endpoint ...
    rows = ai_judgments(db)
    assert len(rows) == 8 and {r.annotator for r in rows} == {"gpt"}
    for r in rows:  # the longer response is right, in whatever order the sides were sampled
        assert r.choice == ("a" if len(r.text_a) > len(r.text_b) else "b") and r.confidence == 1.0
        assert "[a shown first]" in r.rationale and "[b shown first]" in r.rationale
    # ... and the judge took no person's slot: every pair still wants its one human judgment.
    assert storage.status_counts(db)["counts"]["pairs_open"] == len(pair_ids)
    figures = judge_figures(db)["gpt"]
    assert figures["control_accuracy"] == 1.0 and figures["control_judgments"] == 2
    assert figures["left_bias"] == 0.5  # an unbiased judge picks the first-shown side half the time
    assert figures["requests"] == 16 and figures["prompt_tokens"] > 0 and figures["completion_tokens"] > 0
    # A second run finds nothing new to judge (and so never calls the endpoint, which is gone).
    again = run(ws, db)
    assert again.status == "done" and "no pairs left" in again.metrics_json and len(ai_judgments(db)) == 8


def test_a_left_biased_judge_ends_unsure_and_its_bias_is_measured(db, tmp_path) -> None:
    ws = workspace(tmp_path / "ws")
    seed_pairs(db, 5)
    with SimulatedJudgeEndpoint(JudgeBehaviour(left_bias=1.0)) as endpoint:
        add_judge(db, "lefty", "openai", ACTOR, base_url=endpoint.base_url, model="sim")
        assert run(ws, db, "lefty").status == "done"
    rows = ai_judgments(db)
    assert {r.choice for r in rows} == {"tie"} and {r.confidence for r in rows} == {0.0}
    done = storage.list_jobs(db, 1)[0]
    assert '"orders_disagreed": 5' in done.metrics_json
    assert judge_figures(db)["lefty"]["left_bias"] == 1.0


def test_routing_serves_people_the_unsure_pairs_first_and_closes_a_share_of_the_sure(db, tmp_path) -> None:
    ws = workspace(tmp_path / "ws")
    ws.config.labeling.route, ws.config.labeling.judge_share = "judge_uncertain", 0.0
    sure = seed_pairs(db, 4)
    with SimulatedJudgeEndpoint(JudgeBehaviour(accuracy=1.0)) as endpoint:
        add_judge(db, "sure", "openai", ACTOR, base_url=endpoint.base_url, model="sim")
        assert run(ws, db, "sure").status == "done"
    unsure = seed_pairs(db, 3)
    with SimulatedJudgeEndpoint(JudgeBehaviour(left_bias=1.0)) as endpoint:
        add_judge(db, "unsure", "openai", ACTOR, base_url=endpoint.base_url, model="sim")
        assert run(ws, db, "unsure", pairs=3).status == "done"
    with db.session() as s:
        pairs = {p.id: p for p in s.exec(select(storage.Pair))}
    assert all(pairs[i].judgments_wanted == 0 for i in sure)  # the judge's label stands: closed to people
    assert all(pairs[i].priority == UNSURE_PRIORITY and pairs[i].judgments_wanted == 1 for i in unsure)
    person = storage.create_annotator(db, "alice", "password123")
    served = storage.next_pair_for(db, person.id, rng=random.Random(0))
    assert served.pair_id in unsure


@pytest.mark.parametrize("mode", ["down", "slow", "garbage", "broken", "429", "500"])
def test_a_failing_endpoint_fails_the_job_with_one_line_and_stores_nothing(db, tmp_path, mode) -> None:
    ws = workspace(tmp_path / "ws", timeout_seconds=0.5)
    seed_pairs(db, 3)
    person = storage.create_annotator(db, "alice", "password123")
    behaviour = JudgeBehaviour(mode="answer" if mode == "down" else mode, slow_seconds=3.0)
    with SimulatedJudgeEndpoint(behaviour) as endpoint:
        url = f"http://127.0.0.1:{free_port()}/v1" if mode == "down" else endpoint.base_url
        add_judge(db, "flaky", "openai", ACTOR, base_url=url, model="sim")
        done = run(ws, db, "flaky")
        if mode != "down":
            assert endpoint.seen.requests == ws.config.judges.retries + 1  # tried, retried, then gave up
    assert done.status == "failed"
    first = done.error.splitlines()[0]
    assert "judge 'flaky'" in first and "nothing was stored" in first
    assert ai_judgments(db) == [] and storage.get_judge(db, "flaky").stats == {}
    # The labeling page is unaffected: people are served and their judgments recorded as ever.
    served = storage.next_pair_for(db, person.id)
    storage.record_judgment(db, pair_id=served.pair_id, annotator_id=person.id, choice="a")


def test_retries_ride_out_a_burst_of_429s_and_the_request_cap_stops_a_run(db, tmp_path) -> None:
    ws = workspace(tmp_path / "ws", retries=3)
    seed_pairs(db, 4)
    with SimulatedJudgeEndpoint(JudgeBehaviour(mode="429", fail_first=2)) as endpoint:
        add_judge(db, "busy", "openai", ACTOR, base_url=endpoint.base_url, model="sim")
        done = run(ws, db, "busy", max_requests=5)  # 2 refused, then 3 answers: one pair in both orders
    assert done.status == "done"
    assert '"stopped": "request cap (5) reached"' in done.metrics_json and '"requests": 5' in done.metrics_json
    assert len(ai_judgments(db)) == 1  # the pair cut by the cap (one order answered) is not stored


def test_refusals_are_one_line(db, tmp_path) -> None:
    ws = workspace(tmp_path / "ws")
    with pytest.raises(ActionRefused, match="No judge named 'nobody'"):
        request_judge_run(ws, db, "nobody", ACTOR)
    add_judge(db, "gpt", "openai", ACTOR, base_url="http://127.0.0.1:9/v1", model="m")
    set_judge_enabled(db, "gpt", False, ACTOR)
    with pytest.raises(ActionRefused, match="disabled"):
        request_judge_run(ws, db, "gpt", ACTOR)
    bad = [({"kind": "openai", "model": "m"}, "needs --base-url"),
           ({"kind": "openai", "base_url": "ftp://x", "model": "m"}, "http:// or https://"),
           ({"kind": "openai", "base_url": "http://u:p@x/v1", "model": "m"}, "must not hold a user"),
           ({"kind": "openai", "base_url": "http://x/v1", "model": "m", "api_key_env": SECRET}, "NAME of an"),
           ({"kind": "hf", "model": str(tmp_path / "none")}, "does not exist"),
           ({"kind": "hf", "model": "default", "base_url": "http://x"}, "--base-url does not apply"),
           ({"kind": "reward-model", "model": "x", "rubric": tmp_path / "r.md"}, "--rubric does not apply"),
           ({"kind": "gemini", "model": "x"}, "unknown judge kind 'gemini'"),
           ({"kind": "openai", "base_url": "http://x/v1", "model": "m", "rubric": tmp_path / "missing.md"},
            "cannot read the rubric")]
    for i, (kwargs, says) in enumerate(bad):
        with pytest.raises(ActionRefused, match=says) as refused:
            add_judge(db, f"j{i}", actor=ACTOR, **kwargs)
        assert "\n" not in str(refused.value) and SECRET not in str(refused.value)
    with pytest.raises(ActionRefused, match="already exists"):
        add_judge(db, "gpt", "openai", ACTOR, base_url="http://x/v1", model="m")


def test_the_worker_runs_active_judges_on_new_pairs_by_itself_until_one_fails(db, tmp_path) -> None:
    ws = workspace(tmp_path / "ws")
    worker = Worker(ws, db, poll_seconds=0.01)
    with SimulatedJudgeEndpoint(JudgeBehaviour()) as endpoint:
        add_judge(db, "auto", "openai", ACTOR, base_url=endpoint.base_url, model="sim")
        assert worker.run_once() is None  # no pairs yet: nothing to judge, nothing queued
        seed_pairs(db, 3)
        done = worker.run_once()
        assert (done.kind, done.status, json.loads(done.params_json)["trigger"]) == ("judge", "done", "auto")
        assert len(ai_judgments(db)) == 3 and worker.run_once() is None  # judged: nothing more to do
    seed_pairs(db, 2)  # new pairs, and the endpoint is gone: the run fails once ...
    assert worker.run_once().status == "failed"
    assert worker.run_once() is None  # ... and waits for a person instead of failing every poll
