"""Honest truncation: sampling records why each response ended (eos or length), the served pair says
which side was cut and at how many tokens, exports carry it, and the operator page counts cut
responses per policy version."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlmodel import select

import storage
from labeling_app.operator.rounds import ROUND_COLUMNS, round_rows
from rlhf_core.data.export import export_preferences
from rlhf_core.loop import sampling
from rlhf_core.service.dashboard import rounds_table
from rlhf_core.training.workspace_stack import load_stack
from rlhf_core.workspace import init_workspace

SINCE = storage.utcnow().replace(year=2000)


def test_sampling_records_why_each_response_ended(tmp_path: Path, tiny_model_dir: Path, one_thread) -> None:  # noqa: ANN001
    ws, _ = init_workspace(tmp_path / "ws", model=str(tiny_model_dir))
    ws.config.sampling.max_new_tokens = 3
    ws.config.sampling.per_prompt = 2
    db = ws.database()
    storage.add_prompts(db, [[{"role": "user", "content": f"topic {i}"}] for i in range(3)])
    stack = load_stack(ws)
    conversations = [[{"role": "user", "content": "hello"}]] * 4
    out = sampling.generate_responses(stack, conversations, max_new_tokens=3, temperature=1.0, top_p=1.0)
    assert all(r.finish_reason in ("eos", "length") for r in out)
    assert all(r.token_count == 3 for r in out if r.finish_reason == "length")

    # A response whose last token is eos ended; the tokens before it are what the page shows.
    real_sample, eos = stack.sample, stack.tokenizer.eos_token_id
    stack.sample = lambda prompts, params, **kw: [r[:1] + [eos] for r in real_sample(prompts, params, **kw)]
    ended = sampling.generate_responses(stack, conversations, max_new_tokens=3, temperature=1.0, top_p=1.0)
    assert [(r.token_count, r.finish_reason) for r in ended] == [(2, "eos")] * 4
    stack.sample = real_sample

    result = sampling.sample_pairs(ws, db, stack, n_pairs=3, progress=False)
    assert result.samples >= 2
    with db.session() as s:
        rows = s.exec(select(storage.Sample)).all()
    assert rows and all(r.finish_reason in ("eos", "length") for r in rows)
    assert all(r.token_count == 3 for r in rows if r.finish_reason == "length")
    db.dispose()


def _pair(db, a: tuple, b: tuple) -> int:  # noqa: ANN001
    storage.add_prompts(db, [[{"role": "user", "content": "a question"}]])
    prompt = storage.list_prompts(db)[0]
    (pair,) = storage.record_generations(db, prompt_id=prompt.id, policy_version_id=0, responses=[a, b],
                                         gen_params={}, pairs=[(0, 1)])
    return pair.id


def test_a_served_pair_says_which_side_was_cut(db) -> None:  # noqa: ANN001
    _pair(db, ("the game is", 64, "length"), ("done.", 7, "eos"))
    alice = storage.create_annotator(db, "alice", "password123")
    shown = storage.annotator_screen(db, alice.id, lease_seconds=60, since=SINCE).pair
    cut = {shown.left_text: shown.left_cut_tokens, shown.right_text: shown.right_cut_tokens}
    assert cut == {"the game is": 64, "done.": None}
    with pytest.raises(ValueError, match="finish_reason must be one of"):
        storage.add_samples(db, prompt_id=1, policy_version_id=0, responses=[("x", 1, "stop")], gen_params={})


def test_export_carries_the_finish_reasons(db, tmp_path: Path) -> None:  # noqa: ANN001
    pair_id = _pair(db, ("cut", 64, "length"), ("ended", 7, "eos"))
    alice = storage.create_annotator(db, "alice", "password123")
    storage.record_judgment(db, pair_id=pair_id, annotator_id=alice.id, choice="b", require_served=False)
    export_preferences(db, tmp_path / "out", fmt="jsonl", test_fraction=0.0)
    (row,) = [json.loads(line) for line in (tmp_path / "out" / "train.jsonl").read_text().splitlines()]
    assert (row["finish_reason_chosen"], row["finish_reason_rejected"]) == ("eos", "length")
    assert "finish_reason_chosen" in (tmp_path / "out" / "README.md").read_text()


def test_the_rounds_table_shows_the_share_of_cut_responses(sqlite_db) -> None:  # noqa: ANN001
    db = sqlite_db
    _pair(db, ("cut", 64, "length"), ("ended", 7, "eos"))
    storage.add_samples(db, prompt_id=1, policy_version_id=0, responses=[("cut again", 64, "length"),
                                                                         ("unknown", 5)], gen_params={})
    (base,) = rounds_table(db)
    assert base["cut_off_share"] == pytest.approx(2 / 3) and base["cut_off_known"] == 3
    (row,) = round_rows([base])
    assert row[ROUND_COLUMNS.index("cut off")] == "67%"
