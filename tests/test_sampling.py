"""Sampling pairs from the policy on a tiny model: pairs, versions, no duplicate or empty pairs."""

from __future__ import annotations

import json

import pytest

import storage
from rlhf_core.loop import sampling
from rlhf_core.loop.pair_selection import candidate_pairs, distinct_responses
from rlhf_core.loop.sampling import PoolTopper, sample_pairs
from rlhf_core.training.workspace_stack import load_stack
from rlhf_core.workspace import init_workspace


def test_candidate_pairs_skip_identical_and_empty() -> None:
    keep, identical, empty = distinct_responses(["hello", "hello ", "", "world", "  ", "other"])
    assert candidate_pairs(keep) == [(0, 3), (0, 5), (3, 5)]
    assert identical == 1
    assert empty == 2


@pytest.fixture
def tiny_ws(tmp_path, tiny_model_dir):
    ws, _ = init_workspace(tmp_path / "ws", model=str(tiny_model_dir))
    ws.config.sampling.max_new_tokens = 12
    ws.config.sampling.batch_size = 8
    db = ws.database()
    storage.add_prompts(db, [[{"role": "user", "content": f"tell me about topic {i}"}] for i in range(6)])
    storage.add_prompts(db, [[{"role": "user", "content": "an eval prompt"}]], split="eval")
    yield ws, db
    db.dispose()


def test_sample_pairs_records_versions_and_params(tiny_ws) -> None:
    ws, db = tiny_ws
    stack = load_stack(ws)
    result = sample_pairs(ws, db, stack, n_pairs=6, per_prompt=3, progress=False)
    assert result.policy_version == 0
    assert result.pairs >= 6
    with db.session() as s:
        samples = s.exec(storage.Sample.__table__.select()).all()
        pairs = s.exec(storage.Pair.__table__.select()).all()
    assert len(samples) == result.samples == 3 * result.prompts
    assert all(row.policy_version_id == 0 for row in samples)
    params = json.loads(samples[0].gen_params_json)
    assert params["max_new_tokens"] == 12 and params["per_prompt"] == 3
    texts = {row.id: row.text for row in samples}
    for pair in pairs:
        a, b = texts[pair.sample_a_id], texts[pair.sample_b_id]
        assert a.strip() and b.strip() and " ".join(a.split()) != " ".join(b.split())
    eval_ids = {p.id for p in storage.list_prompts(db, split="eval")}
    assert not any(pair.prompt_id in eval_ids for pair in pairs)


def test_identical_responses_are_not_paired(tiny_ws, monkeypatch) -> None:
    ws, db = tiny_ws

    def same_answer(stack, conversations, **_kw):
        return [("always the same", 3) if i % 3 else ("", 0) for i in range(len(conversations))]

    monkeypatch.setattr(sampling, "generate_responses", same_answer)
    stack = load_stack(ws)
    result = sample_pairs(ws, db, stack, n_pairs=4, per_prompt=3, progress=False)
    assert result.samples > 0
    assert result.pairs == 0
    assert result.empty_skipped == result.prompts
    assert result.identical_skipped == result.prompts
    assert storage.status_counts(db)["counts"]["pairs"] == 0


def test_sampling_stops_at_the_prompts_the_pairs_need(tiny_ws, monkeypatch) -> None:
    ws, db = tiny_ws
    ws.config.sampling.batch_size = 18  # room for six prompts in one batch
    calls: list[int] = []

    def distinct(stack, conversations, **_kw):
        calls.append(len(conversations))
        return [(f"answer number {i}", 3) for i in range(len(conversations))]

    monkeypatch.setattr(sampling, "generate_responses", distinct)
    result = sample_pairs(ws, db, load_stack(ws), n_pairs=4, per_prompt=3, progress=False)
    # Three pairs per prompt: two prompts make the four pairs; the other four are not sampled.
    assert calls == [6]
    assert (result.prompts, result.pairs) == (2, 6)


def test_pool_topper_fills_in_background(tiny_ws) -> None:
    ws, db = tiny_ws
    ws.config.sampling.pool_min_open_pairs = 2
    ws.config.sampling.pool_refill_pairs = 2
    topper = PoolTopper(ws, db)
    assert topper.request_top_up() is True
    topper.wait(120)
    assert topper.last_error is None
    assert storage.open_pair_count(db) >= 2
    assert topper.request_top_up() is False  # pool is full enough: nothing starts


def test_pool_topper_lends_its_model_one_user_at_a_time(tiny_ws) -> None:
    """`model()` loads the sampler's stack once and lends it; a top-up started meanwhile waits for it back."""
    import threading

    ws, db = tiny_ws
    ws.config.sampling.pool_min_open_pairs = 2
    ws.config.sampling.pool_refill_pairs = 2
    loads = []

    def counted(w):  # noqa: ANN001, ANN202
        loads.append(1)
        return load_stack(w)

    topper = PoolTopper(ws, db, stack_factory=counted)
    with topper.model() as stack:
        assert topper.request_top_up() is True  # starts, then waits for the model
        threading.Event().wait(0.5)
        assert topper.busy and storage.open_pair_count(db) == 0
        with stack.use("policy"):  # the borrower uses the stack as it likes
            pass
    topper.wait(120)
    assert topper.last_error is None and storage.open_pair_count(db) >= 2
    with topper.model() as again:
        assert again is stack
    assert loads == [1]
