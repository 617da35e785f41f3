"""Exporting judged pairs as a preference dataset: aggregation, filters, splits, formats and TRL compatibility.

Tests taking `db` run on SQLite and on PostgreSQL; format tests use SQLite only (the files do not
depend on the backend)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pandas as pd
import pytest
import yaml
from sqlmodel import select

from rlhf_core.data.export import (
    ExportError,
    aggregate_pairs,
    export_preferences,
    render_prompt_text,
)
from storage import (
    Annotator,
    Database,
    Prompt,
    Sample,
    add_pair_between,
    add_policy_version,
    add_prompts,
    content_hash,
    hash_password,
    judgment_rows,
    record_judgment,
)

COLUMNS = ["prompt", "chosen", "rejected", "pair_id", "prompt_id", "round", "n_annotators", "agreement", "strength",
           "tie", "policy_version_chosen", "policy_version_rejected", "annotators", "low_accuracy_annotators",
           "annotator_kind", "annotator_kinds", "source", "system_chosen", "system_rejected", "metadata", "prior",
           "finish_reason_chosen", "finish_reason_rejected"]


def make_annotators(db: Database, n: int, prefix: str = "ann") -> list[int]:
    """`n` annotators <prefix>-0.. sharing one precomputed hash (scrypt per user would dominate the run time)."""
    digest = hash_password("password123")
    with db.session() as s:
        users = [Annotator(username=f"{prefix}-{i}", password_hash=digest) for i in range(n)]
        s.add_all(users)
        s.flush()
        return [u.id for u in users]


def add_pair(db: Database, text_a: str, text_b: str, *, question: str | None = None, round: int = 0,
             version_a: int = 0, version_b: int = 0, kind: str = "train") -> int:
    """A pair between two new samples; a new prompt unless `question` names an existing one."""
    messages = [{"role": "user", "content": question or f"question {uuid.uuid4().hex}"}]
    add_prompts(db, [messages])
    with db.session() as s:
        prompt_id = s.exec(select(Prompt.id).where(Prompt.content_hash == content_hash(messages))).one()
        a = Sample(prompt_id=prompt_id, policy_version_id=version_a, text=text_a)
        b = Sample(prompt_id=prompt_id, policy_version_id=version_b, text=text_b)
        s.add_all([a, b])
        s.flush()
        ids = a.id, b.id
    return add_pair_between(db, prompt_id=prompt_id, sample_a_id=ids[0], sample_b_id=ids[1], round=round,
                            judgments_wanted=3, kind=kind).id


def judge(db: Database, pair_id: int, annotators: list[int], votes: list[str]) -> None:
    """Record one vote per annotator; a vote is "choice" or "choice:strength"."""
    for annotator, vote in zip(annotators, votes, strict=True):
        choice, _, strength = vote.partition(":")
        record_judgment(db, pair_id=pair_id, annotator_id=annotator, choice=choice, strength=strength or None,
                        require_served=False)


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture
def judged(db: Database) -> dict[str, int]:
    """Five pairs covering every aggregation case, plus an eval-vs-base pair that is not exported by default."""
    anns = make_annotators(db, 3)
    add_policy_version(db, parent_id=0, adapter_path="adapters/policy-1", algorithm="ppo", round=1, metrics={})
    pairs = {
        "majority_a": add_pair(db, "A-majority", "B-minority"),
        "unanimous_b": add_pair(db, "A-loses", "B-wins", version_a=0, version_b=1),
        "split": add_pair(db, "A-split", "B-split"),
        "both_bad": add_pair(db, "A-bad", "B-bad"),
        "tie": add_pair(db, "A-tie", "B-tie"),
        "eval": add_pair(db, "A-eval", "B-eval", kind="eval_vs_base"),
    }
    judge(db, pairs["majority_a"], anns, ["a:clear", "a:strong", "b:strong"])
    judge(db, pairs["unanimous_b"], anns[:1], ["b"])
    judge(db, pairs["split"], anns[:2], ["a", "b"])
    judge(db, pairs["both_bad"], anns, ["both_bad", "both_bad", "a"])
    judge(db, pairs["tie"], anns[:2], ["tie", "tie"])
    judge(db, pairs["eval"], anns[:1], ["a"])
    return pairs


def export_rows(db: Database, out: Path, **kwargs) -> tuple[dict[int, dict], object]:
    result = export_preferences(db, out, fmt="jsonl", test_fraction=0.0, **kwargs)
    assert not (out / "test.jsonl").exists()  # no test split asked for, so none is written
    return {row["pair_id"]: row for row in read_jsonl(out / "train.jsonl")}, result


# -- aggregation and filters (SQLite and PostgreSQL) ------------------------------------------------


def test_rows_follow_the_majority_and_carry_metadata(db, judged, tmp_path):
    rows, result = export_rows(db, tmp_path / "out")
    assert set(rows) == {judged["majority_a"], judged["unanimous_b"]}
    assert result.skipped == {"no_majority": 1, "majority_both_bad": 1, "majority_tie": 1, "below_min_agreement": 0}
    counts = (result.n_rows, result.n_train, result.n_test, result.n_pairs_judged, result.n_pairs_skipped)
    assert counts == (2, 2, 0, 5, 3)

    majority = rows[judged["majority_a"]]
    assert majority["chosen"] == [{"role": "assistant", "content": "A-majority"}]
    assert majority["rejected"] == [{"role": "assistant", "content": "B-minority"}]
    assert majority["agreement"] == pytest.approx(2 / 3)
    assert majority["n_annotators"] == 3 and majority["annotators"] == ["ann-0", "ann-1", "ann-2"]
    assert majority["strength"] == "clear"  # one clear, one strong among the majority: the weaker wins the tie
    assert majority["tie"] is False

    b_wins = rows[judged["unanimous_b"]]
    assert b_wins["chosen"][0]["content"] == "B-wins" and b_wins["rejected"][0]["content"] == "A-loses"
    assert (b_wins["policy_version_chosen"], b_wins["policy_version_rejected"]) == (1, 0)
    assert b_wins["agreement"] == 1.0 and b_wins["strength"] is None and b_wins["round"] == 0

    # Every exported row agrees with the judgments stored in the database.
    for row in rows.values():
        stored = [r for r in judgment_rows(db) if r.pair_id == row["pair_id"]]
        assert row["prompt"] == stored[0].prompt_messages
        winner = "a" if row["chosen"][0]["content"] == stored[0].text_a else "b"
        votes = [r.choice for r in stored]
        assert votes.count(winner) == max(votes.count(c) for c in set(votes))
        assert row["agreement"] == pytest.approx(votes.count(winner) / len(votes))


def test_anonymize_replaces_usernames_consistently(db, judged, tmp_path):
    rows, _ = export_rows(db, tmp_path / "out", anonymize=True)
    assert rows[judged["majority_a"]]["annotators"] == ["annotator-1", "annotator-2", "annotator-3"]
    assert rows[judged["unanimous_b"]]["annotators"] == ["annotator-1"]  # ann-0 again: the same pseudonym
    text = (tmp_path / "out" / "train.jsonl").read_text() + (tmp_path / "out" / "README.md").read_text()
    assert "ann-" not in text and "pseudonyms `annotator-N`" in text


def test_include_ties_flags_ties_but_never_exports_both_bad(db, judged, tmp_path):
    rows, result = export_rows(db, tmp_path / "out", include_ties=True)
    assert set(rows) == {judged["majority_a"], judged["unanimous_b"], judged["tie"]}
    tie = rows[judged["tie"]]
    assert tie["tie"] is True and tie["chosen"][0]["content"] == "A-tie" and tie["rejected"][0]["content"] == "B-tie"
    assert result.skipped["majority_both_bad"] == 1 and judged["both_bad"] not in rows
    card = (tmp_path / "out" / "README.md").read_text()
    assert "Ties: included (1 rows)" in card and "Both bad: never exported" in card


def test_min_agreement_keeps_pairs_at_or_above_the_threshold(db, judged, tmp_path):
    rows, result = export_rows(db, tmp_path / "strict", min_agreement=0.7)
    assert set(rows) == {judged["unanimous_b"]} and result.skipped["below_min_agreement"] == 1
    rows, _ = export_rows(db, tmp_path / "boundary", min_agreement=2 / 3)
    assert judged["majority_a"] in rows


def test_round_and_kind_filters(db, judged, tmp_path):
    anns = make_annotators(db, 1, prefix="late")
    later = add_pair(db, "A-later", "B-later", round=2)
    judge(db, later, anns, ["b"])
    rows, _ = export_rows(db, tmp_path / "round2", round=2)
    assert set(rows) == {later} and rows[later]["round"] == 2
    rows, _ = export_rows(db, tmp_path / "eval", kinds=("eval_vs_base",))
    assert set(rows) == {judged["eval"]}
    with pytest.raises(ExportError, match="no judgments on pairs of kind train, imported in round 7"):
        export_preferences(db, tmp_path / "none", fmt="hf", round=7)
    assert not (tmp_path / "none").exists()


def test_nothing_to_export_names_the_reasons(db, tmp_path):
    anns = make_annotators(db, 2)
    judge(db, add_pair(db, "x", "y"), anns, ["tie", "tie"])
    judge(db, add_pair(db, "p", "q"), anns, ["both_bad", "both_bad"])
    with pytest.raises(ExportError, match=r"none of the 2 judged.*1 majority both bad, 1 majority tie.*--include-ties"):
        export_preferences(db, tmp_path / "out", fmt="jsonl")
    assert not (tmp_path / "out").exists()


def test_aggregate_pairs_without_a_majority_has_no_label():
    # Aggregation is pure: rows in, verdicts out; [a, b, tie] has three labels with one vote each.
    from datetime import datetime, timezone

    from storage import JudgmentRow

    def row(i: int, choice: str) -> JudgmentRow:
        return JudgmentRow(judgment_id=i, pair_id=1, prompt_id=1, prompt_messages=[], prompt_split="train",
                           text_a="a", text_b="b", version_a=0, version_b=0, choice=choice, strength=None,
                           rationale=None, annotator=f"u{i}", left_side="a", round=0, kind="train",
                           created_at=datetime.now(timezone.utc))

    (verdict,) = aggregate_pairs([row(1, "a"), row(2, "b"), row(3, "tie")])
    assert verdict.label is None and verdict.agreement == 0.0
    (verdict,) = aggregate_pairs([row(1, "tie"), row(2, "tie"), row(3, "a")])
    assert verdict.label == "tie" and verdict.agreement == pytest.approx(2 / 3)


# -- splits and formats (SQLite) -------------------------------------------------------------------


@pytest.fixture
def many_prompts(sqlite_db: Database) -> Database:
    """20 prompts with 2 decisive pairs each, so the split has whole prompts to move."""
    (ann,) = make_annotators(sqlite_db, 1)
    for i in range(20):
        for j in range(2):
            judge(sqlite_db, add_pair(sqlite_db, f"good {i}.{j}", f"bad {i}.{j}", question=f"prompt {i}"), [ann],
                  ["a"])
    return sqlite_db


def test_train_and_test_share_no_prompt(many_prompts, tmp_path):
    result = export_preferences(many_prompts, tmp_path / "out", fmt="jsonl", test_fraction=0.25, seed=3)
    train, test = read_jsonl(tmp_path / "out" / "train.jsonl"), read_jsonl(tmp_path / "out" / "test.jsonl")
    assert (result.n_train, result.n_test) == (len(train), len(test)) == (30, 10)
    assert not {r["prompt_id"] for r in train} & {r["prompt_id"] for r in test}
    assert len({r["pair_id"] for r in train + test}) == 40
    again = export_preferences(many_prompts, tmp_path / "again", fmt="jsonl", test_fraction=0.25, seed=3)
    assert again.n_test == 10 and read_jsonl(tmp_path / "again" / "test.jsonl") == test


def test_hf_export_reloads_with_expected_columns_and_a_card(many_prompts, tmp_path):
    from datasets import load_from_disk

    out = tmp_path / "hf"
    result = export_preferences(many_prompts, out, fmt="hf", test_fraction=0.1)
    ds = load_from_disk(str(out))
    assert set(ds) == {"train", "test"} and ds["train"].column_names == COLUMNS
    assert (len(ds["train"]), len(ds["test"])) == (result.n_train, result.n_test) == (36, 4)
    assert ds["train"][0]["prompt"][0]["role"] == "user"
    card = (out / "README.md").read_text()
    header = yaml.safe_load(card.split("---")[1])
    assert [f["name"] for f in header["dataset_info"]["features"]] == COLUMNS
    assert "rows: 40 (train 36, test 4)" in card and "online RLHF with rlhf-loop" in card
    assert "load_from_disk" in card


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_jsonl_and_parquet_reload_with_pandas_and_datasets(many_prompts, tmp_path, fmt):
    from datasets import load_dataset

    out = tmp_path / fmt
    result = export_preferences(many_prompts, out, fmt=fmt, conversational=False)
    read = pd.read_json if fmt == "jsonl" else pd.read_parquet
    frame = read(out / f"train.{fmt}", **({"lines": True} if fmt == "jsonl" else {}))
    assert list(frame.columns) == COLUMNS and len(frame) == result.n_train
    assert frame["prompt"].str.startswith("prompt ").all() and frame["chosen"].str.startswith("good ").all()
    ds = load_dataset(str(out), cache_dir=str(tmp_path / "cache"))  # splits by file name, schema from the card
    assert {name: len(split) for name, split in ds.items()} == {"train": result.n_train, "test": result.n_test}
    assert ds["train"].features["strength"].dtype == "string"  # all null, still typed as the card says


def test_existing_output_is_not_overwritten_unless_asked(many_prompts, tmp_path):
    from datasets import load_dataset

    out, cache = tmp_path / "out", str(tmp_path / "cache")
    export_preferences(many_prompts, out, fmt="parquet")
    assert len(load_dataset(str(out), cache_dir=cache)["train"]) == 36
    with pytest.raises(ExportError, match="already exists"):
        export_preferences(many_prompts, out, fmt="parquet")
    assert export_preferences(many_prompts, out, fmt="parquet", overwrite=True, test_fraction=0.5).n_train == 20
    assert len(load_dataset(str(out), cache_dir=cache)["train"]) == 20  # the new rows, not a stale cache
    with pytest.raises(ExportError, match="format must be one of hf, jsonl, parquet"):
        export_preferences(many_prompts, tmp_path / "x", fmt="csv")


def test_standard_form_renders_conversations_as_plain_text():
    assert render_prompt_text([{"role": "user", "content": "Hi?"}]) == "Hi?"
    turns = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi?"}]
    assert render_prompt_text(turns) == "System: Be brief.\n\nUser: Hi?"


# -- TRL -------------------------------------------------------------------------------------------


def test_conversational_export_passes_trl_preference_checks(many_prompts, tmp_path, tiny_model_dir):
    data_utils = pytest.importorskip("trl.data_utils", reason="trl is not installed (pip install trl)")
    from datasets import load_from_disk
    from transformers import AutoTokenizer

    export_preferences(many_prompts, tmp_path / "hf", fmt="hf")
    row = load_from_disk(str(tmp_path / "hf"))["train"][0]
    assert data_utils.is_conversational(row)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    text = data_utils.maybe_apply_chat_template(row, tokenizer)
    assert set(text) == {"prompt", "chosen", "rejected"}
    assert text["prompt"] == f"<|im_start|>user\n{row['prompt'][0]['content']}<|im_end|>\n<|im_start|>assistant\n"
    assert text["chosen"] == f"{row['chosen'][0]['content']}<|im_end|>\n"
    assert text["rejected"] == f"{row['rejected'][0]['content']}<|im_end|>\n"


def test_trl_reward_trainer_trains_one_step_on_the_export(many_prompts, tmp_path, tiny_model_dir):
    trl = pytest.importorskip("trl", reason="trl is not installed (pip install trl)")
    from datasets import load_from_disk
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    export_preferences(many_prompts, tmp_path / "hf", fmt="hf")
    train = load_from_disk(str(tmp_path / "hf"))["train"]
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    config = AutoConfig.from_pretrained(tiny_model_dir, num_labels=1, pad_token_id=tokenizer.pad_token_id)
    model = AutoModelForSequenceClassification.from_config(config)
    args = trl.RewardConfig(output_dir=str(tmp_path / "rm"), max_steps=1, report_to=[], per_device_train_batch_size=2,
                            bf16=False, use_cpu=True, save_strategy="no", logging_steps=1, disable_tqdm=True)
    trainer = trl.RewardTrainer(model=model, args=args, train_dataset=train, processing_class=tokenizer)
    output = trainer.train()
    assert trainer.state.global_step == 1
    assert 0.0 < output.training_loss < 5.0
