"""Data from outside the loop: pair files (`rlhf pairs import`) and preference datasets (`rlhf preferences
import`): good files in every format, malformed ones refused whole with one line and nothing written;
imported pairs served like sampled ones (k, no repeat, sides at random) but never on-policy DPO data; prior
judgments never served, kept out of agreement, and exported only when asked. Every database test runs on SQLite
and on PostgreSQL (the `db` fixture)."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import pytest
from conftest import import_kind
from sqlmodel import select

import storage
from rlhf_core.config import PolicyConfig
from rlhf_core.data.export import export_preferences
from rlhf_core.data.file_checks import InputFileError
from rlhf_core.data.pair_files import read_pair_file
from rlhf_core.data.preference_files import read_preference_file
from rlhf_core.service.dashboard import annotation_quality
from rlhf_core.training.dpo import dpo_examples
from storage import Pair, Prompt, Sample
from storage.tables import PriorPreference


def jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def pair_records(n: int, systems: tuple[str, str] = ("alpha", "beta")) -> list[dict]:
    return [{"prompt": f"question {i}", "response_a": f"{systems[0]} says {i}", "response_b": f"{systems[1]} says {i}",
             "system_a": systems[0], "system_b": systems[1], "metadata": {"row": i}} for i in range(n)]


def nothing_written(db: storage.Database) -> bool:
    counts = storage.status_counts(db)["counts"]
    with db.session() as s:
        priors = len(s.exec(select(PriorPreference.id)).all())
    return counts["prompts"] == counts["samples"] == counts["pairs"] == priors == 0


# -- good files ------------------------------------------------------------------------------------


def test_pair_files_import_in_every_format_and_a_repeat_adds_nothing(db, tmp_path: Path) -> None:
    import datasets

    first = jsonl(tmp_path / "arena.jsonl", pair_records(3))
    csv_file = tmp_path / "arena.csv"
    csv_file.write_text('messages,response_a,response_b,system_a,system_b,metadata\n'
                        '"[{""role"": ""system"", ""content"": ""be brief""}, {""role"": ""user"", ""content"": '
                        '""hi""}]",Hello!,Go away.,gamma,,"{""judge"": ""me""}"\n', encoding="utf-8")
    datasets.Dataset.from_list([{"prompt": "from a dataset", "response_a": "x", "response_b": "y"}]).save_to_disk(
        str(tmp_path / "ds"))
    first_import = import_kind(db, "pairs", first, judgments_wanted=2)
    assert (first_import.added, first_import.duplicates) == (3, 0)
    assert import_kind(db, "pairs", csv_file, source="csv import", judgments_wanted=2).added == 1
    assert import_kind(db, "pairs", tmp_path / "ds", judgments_wanted=2).added == 1
    # The same pairs again, and one of them with its sides swapped: duplicates.
    swapped = {**pair_records(1)[0], "response_a": "beta says 0", "response_b": "alpha says 0"}
    again = import_kind(db, "pairs", jsonl(tmp_path / "again.jsonl", [*pair_records(3), swapped]), judgments_wanted=2)
    assert (again.added, again.duplicates) == (0, 4)

    with db.session() as s:
        rows = s.exec(select(Pair, Prompt).join(Prompt, Prompt.id == Pair.prompt_id).order_by(Pair.id)).all()
        samples = s.exec(select(Sample).order_by(Sample.id)).all()
    assert [(p.kind, p.selection, p.judgments_wanted, p.source) for p, _ in rows] == [
        ("imported", "imported", 2, "arena.jsonl")] * 3 + [("imported", "imported", 2, "csv import"),
                                                          ("imported", "imported", 2, "ds")]
    assert json.loads(rows[0][0].metadata_json) == {"row": 0}
    assert json.loads(rows[3][0].metadata_json) == {"judge": "me"}
    assert {pr.split for _, pr in rows} == {"imported"}
    assert json.loads(rows[3][1].messages_json)[0] == {"role": "system", "content": "be brief"}
    assert {s.policy_version_id for s in samples} == {None}
    assert [s.system for s in samples[:2]] == ["alpha", "beta"] and samples[7].system is None  # csv: no system_b
    # Their prompts are never the loop's: no training prompt, nothing to sample for.
    assert storage.list_prompts(db, split="train") == [] and storage.prompts_needing_pairs(db, limit=10) == []
    assert storage.open_pair_count(db) == 5 and storage.imported_pair_counts(db)["arena.jsonl"] == {"pairs": 3,
                                                                                                     "open": 3}


HH_CHOSEN = "\n\nHuman: Hi there\n\nAssistant: Hello!\n\nHuman: Tell me a joke.\n\nAssistant: Why did the cat sit?"
HH_REJECTED = HH_CHOSEN.rsplit("Assistant: ", 1)[0] + "Assistant: No."


def test_preference_datasets_import_in_trl_and_hh_forms_and_a_repeat_adds_nothing(db, tmp_path: Path) -> None:
    import datasets

    records = [
        {"prompt": "2 + 2?", "chosen": "4", "rejected": "5"},  # TRL standard
        {"prompt": [{"role": "user", "content": "Say hi"}], "chosen": [{"role": "assistant", "content": "Hi!"}],
         "rejected": [{"role": "assistant", "content": "No."}]},  # TRL conversational, explicit prompt
        {"chosen": [{"role": "user", "content": "Name a color"}, {"role": "assistant", "content": "Blue"}],
         "rejected": [{"role": "user", "content": "Name a color"}, {"role": "assistant", "content": "Seven"}]},
        {"chosen": HH_CHOSEN, "rejected": HH_REJECTED},  # Anthropic HH
    ]
    specs = read_preference_file(jsonl(tmp_path / "prefs.jsonl", records))
    assert [(s.messages[-1]["content"], s.chosen, s.rejected) for s in specs] == [
        ("2 + 2?", "4", "5"), ("Say hi", "Hi!", "No."), ("Name a color", "Blue", "Seven"),
        ("Tell me a joke.", "Why did the cat sit?", "No.")]
    assert [m["role"] for m in specs[3].messages] == ["user", "assistant", "user"]
    result = import_kind(db, "preferences", tmp_path / "prefs.jsonl", source="hh-sample", weight=0.5)
    assert (result.added, result.duplicates) == (4, 0)
    csv_file = tmp_path / "prefs.csv"
    csv_file.write_text('prompt,chosen,rejected\n"Capital of France?",Paris,"[not a list, plain text]"\n'
                        '"[{""role"": ""user"", ""content"": ""Say hi""}]","[{""role"": ""assistant"", '
                        '""content"": ""Hi!""}]","[{""role"": ""assistant"", ""content"": ""No.""}]"\n',
                        encoding="utf-8")
    assert import_kind(db, "preferences", csv_file).added == 1  # its second row repeats a JSONL record
    datasets.Dataset.from_list([{"chosen": HH_CHOSEN, "rejected": HH_REJECTED + " Really."}]).save_to_disk(
        str(tmp_path / "hh"))
    assert import_kind(db, "preferences", tmp_path / "hh").added == 1
    assert storage.prior_counts(db) == {"hh": 1, "hh-sample": 4, "prefs.csv": 1}
    rows = storage.prior_preference_rows(db)
    assert [r.weight for r in rows] == [0.5] * 4 + [1.0, 1.0] and rows[4].rejected == "[not a list, plain text]"
    with db.session() as s:
        assert set(s.exec(select(Prompt.split)).all()) == {"prior"}
    # Never served, never counted as pairs or judgments.
    user = storage.create_annotator(db, "ann", "password123").id
    assert storage.next_pair_for(db, user) is None
    counts = storage.status_counts(db)["counts"]
    assert counts["pairs"] == counts["judgments"] == 0 and storage.list_prompts(db, split="train") == []


# -- malformed files: refused whole, one line naming file and line, nothing written ----------------------

GOOD_PAIR = json.dumps(pair_records(1)[0]) + "\n"
PAIR_CSV = "prompt,response_a,response_b,system_a\nq,x,y,s\n"
BAD_PAIRS = [
    ("json.jsonl", GOOD_PAIR + '{"prompt": "p", "response_a": \n', ":2: not valid JSON"),
    ("latin1.jsonl", GOOD_PAIR.encode() + '{"prompt": "caf\xe9"}\n'.encode("latin-1"), ":2: not UTF-8 text"),
    ("bell.jsonl", GOOD_PAIR + GOOD_PAIR.replace("alpha says", "alpha\\u0007 says"),
     ":2: response_a contains the control character U+0007"),
    ("nul.jsonl", GOOD_PAIR + GOOD_PAIR.replace("question 0", "question\\u0000"),
     ":2: prompt contains the control character U+0000"),
    ("missing.jsonl", GOOD_PAIR + '{"prompt": "p", "response_a": "x"}\n', ":2: no 'response_b' field"),
    ("no_prompt.jsonl", GOOD_PAIR + '{"response_a": "x", "response_b": "y"}\n', ":2: no 'prompt' or 'messages'"),
    ("same.jsonl", GOOD_PAIR + GOOD_PAIR.replace("beta says 0", "alpha says 0"),
     ":2: response_a and response_b are the same text"),
    ("long.jsonl", GOOD_PAIR + json.dumps({"prompt": "p", "response_a": "x" * 20_001, "response_b": "y"}) + "\n",
     ":2: response_a is 20001 characters long"),
    ("long_prompt.jsonl", GOOD_PAIR + json.dumps({"prompt": "p" * 20_001, "response_a": "x", "response_b": "y"})
     + "\n", ":2: the prompt is 20001 characters long"),
    ("number.jsonl", GOOD_PAIR + '{"prompt": "p", "response_a": "x", "response_b": 7}\n',
     ":2: 'response_b' must be text, not int"),
    ("metadata.jsonl", GOOD_PAIR + GOOD_PAIR.replace('{"row": 0}', "[1, 2]"), ":2: 'metadata' must be a JSON object"),
    ("reserved.jsonl", GOOD_PAIR + GOOD_PAIR.replace('"system_b": "beta"', '"system_b": "v1"'),
     ":2: system_b 'v1' is the name of a policy version"),
    ("system.jsonl", GOOD_PAIR + GOOD_PAIR.replace('"system_a": "alpha"', '"system_a": "' + "s" * 129 + '"'),
     ":2: system_a is 129 characters long"),
    ("assistant.jsonl", GOOD_PAIR + json.dumps({"messages": [{"role": "assistant", "content": "hi"}],
                                                "response_a": "x", "response_b": "y"}) + "\n",
     ":2: the last message must be from the user"),
    ("list.jsonl", GOOD_PAIR + "[1, 2]\n", ":2: expected an object"),
    ("empty.jsonl", "\n\n", "no pairs found"),
    ("pairs.txt", GOOD_PAIR, "unknown format .txt"),
    ("quote.csv", PAIR_CSV + 'p,"x,y,s\nq,x,y,s\n', ":3: malformed CSV"),
    ("ragged.csv", PAIR_CSV + "p,x,y\n", ":3: 3 fields where the header has 4"),
    ("column.csv", "prompt,response_a\np,x\n", ":1: a CSV file needs the column(s) response_b"),
    ("cell.csv", "prompt,response_a,response_b,metadata\nq,x,y,\np,x,y,\"{oops\"\n", ":3: the metadata cell is not"),
]
GOOD_PREF = json.dumps({"prompt": "2 + 2?", "chosen": "4", "rejected": "5"}) + "\n"
BAD_PREFERENCES = [
    ("same.jsonl", GOOD_PREF + GOOD_PREF.replace('"5"', '"4"'), ":2: chosen and rejected are the same text"),
    ("missing.jsonl", GOOD_PREF + '{"prompt": "p", "chosen": "x"}\n', ":2: no 'rejected' field"),
    ("prompt.jsonl", GOOD_PREF + '{"prompt": 3, "chosen": "x", "rejected": "y"}\n', ":2: 'prompt' must be text"),
    ("two_answers.jsonl", GOOD_PREF + json.dumps({
        "prompt": [{"role": "user", "content": "q"}], "rejected": [{"role": "assistant", "content": "b"}],
        "chosen": [{"role": "assistant", "content": "a"}, {"role": "assistant", "content": "more"}]}) + "\n",
     ":2: 'chosen' must end in exactly one assistant message"),
    ("role.jsonl", GOOD_PREF + json.dumps({"chosen": [{"role": "bot", "content": "a"}],
                                           "rejected": [{"role": "user", "content": "b"}]}) + "\n",
     ":2: chosen[0] must be"),
    ("no_shared.jsonl", GOOD_PREF + json.dumps({
        "chosen": [{"role": "user", "content": "q1"}, {"role": "assistant", "content": "a"}],
        "rejected": [{"role": "user", "content": "q2"}, {"role": "assistant", "content": "b"}]}) + "\n",
     ":2: with no 'prompt', chosen and rejected must share"),
    ("not_hh.jsonl", GOOD_PREF + '{"chosen": "just text", "rejected": "other text"}\n',
     ":2: 'chosen' is not an HH transcript"),
    ("hh_prefix.jsonl", GOOD_PREF + json.dumps({"chosen": HH_CHOSEN, "rejected": HH_REJECTED.replace("Hi there",
                                                                                                     "Hey")}) + "\n",
     ":2: chosen and rejected differ before their last Assistant: turn"),
    ("hh_end.jsonl", GOOD_PREF + json.dumps({"chosen": HH_CHOSEN + "\n\nHuman: and?", "rejected": HH_REJECTED})
     + "\n", ":2: 'chosen' must end with a Human: turn answered by an Assistant: turn"),
    ("latin1.jsonl", GOOD_PREF.encode() + '{"prompt": "caf\xe9"}\n'.encode("latin-1"), ":2: not UTF-8 text"),
    ("bell.jsonl", GOOD_PREF + GOOD_PREF.replace('"4"', '"4\\u0007"'), ":2: chosen contains the control character"),
    ("empty_answer.jsonl", GOOD_PREF + GOOD_PREF.replace('"4"', '"  "'), ":2: 'chosen' is empty"),
    ("empty.jsonl", "\n", "no preferences found"),
    ("ragged.csv", "prompt,chosen,rejected\nq,a,b\nq,a\n", ":3: 2 fields where the header has 3"),
    ("column.csv", "prompt,chosen\nq,a\n", ":1: a CSV file needs the column(s) rejected"),
]


@pytest.mark.parametrize(("name", "content", "message"), BAD_PAIRS, ids=[m[0] for m in BAD_PAIRS])
def test_malformed_pair_file_is_refused_whole(db, tmp_path: Path, name: str, content: str | bytes,
                                              message: str) -> None:
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    with pytest.raises(InputFileError) as caught:
        import_kind(db, "pairs", path, judgments_wanted=1)
    text = str(caught.value)
    assert message in text and str(path) in text and "\n" not in text
    assert nothing_written(db)


@pytest.mark.parametrize(("name", "content", "message"), BAD_PREFERENCES, ids=[m[0] for m in BAD_PREFERENCES])
def test_malformed_preference_file_is_refused_whole(db, tmp_path: Path, name: str, content: str | bytes,
                                                    message: str) -> None:
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    with pytest.raises(InputFileError) as caught:
        import_kind(db, "preferences", path)
    text = str(caught.value)
    assert message in text and str(path) in text and "\n" not in text
    assert nothing_written(db)


def test_bad_weight_format_and_name_are_refused_with_nothing_written(tmp_path: Path, sqlite_db) -> None:
    path = tmp_path / "p.jsonl"
    path.write_text(GOOD_PREF, encoding="utf-8")
    for kwargs, message in (({"weight": -1.0}, "--weight must be a finite number >= 0"),
                            ({"weight": float("nan")}, "--weight must be"), ({"format": "xml"}, "unknown format 'xml'"),
                            ({"source": "  "}, "the import's name (--name) is empty")):
        with pytest.raises(InputFileError, match=re.escape(message)):
            import_kind(sqlite_db, "preferences", path, **kwargs)
    assert nothing_written(sqlite_db)
    with pytest.raises(InputFileError, match="'prompt' must be text"):
        read_preference_file(jsonl(tmp_path / "f.jsonl", [{"prompt": 1, "chosen": "a", "rejected": "b"}]),
                             fmt="standard")
    with pytest.raises(InputFileError, match="the prompt is 41 characters long"):
        read_pair_file(jsonl(tmp_path / "p2.jsonl", [{"prompt": "x" * 41, "response_a": "a", "response_b": "b"}]),
                       max_prompt_chars=40)


# -- imported pairs in the loop ----------------------------------------------------------------------


def test_imported_pairs_are_served_like_sampled_ones_k_no_repeat_and_sides_at_random(db, tmp_path: Path) -> None:
    import_kind(db, "pairs", jsonl(tmp_path / "a.jsonl", pair_records(12)), judgments_wanted=2)
    users = [storage.create_annotator(db, f"ann{i}", "password123").id for i in range(3)]
    seen: dict[int, list[int]] = {u: [] for u in users}
    lefts = set()
    rng = random.Random(0)
    for turn in range(60):
        user = users[turn % 3]
        served = storage.next_pair_for(db, user, rng=rng)
        if served is None:
            continue
        lefts.add(served.left_side)
        assert served.pair_id not in seen[user]  # never shown twice to one person
        seen[user].append(served.pair_id)
        storage.record_judgment(db, pair_id=served.pair_id, annotator_id=user, choice="a")
    assert lefts == {"a", "b"}
    with db.session() as s:
        judged = s.exec(select(Pair.n_judgments)).all()
    assert judged == [2] * 12 and storage.open_pair_count(db) == 0  # k means k
    assert sum(len(v) for v in seen.values()) == 24


def test_imported_pairs_train_the_reward_model_by_setting_but_are_never_on_policy_dpo_data(db, tmp_path: Path) -> None:
    import_kind(db, "pairs", jsonl(tmp_path / "a.jsonl", pair_records(5)), judgments_wanted=1)
    user = storage.create_annotator(db, "ann", "password123").id
    while (served := storage.next_pair_for(db, user)) is not None:
        storage.record_judgment(db, pair_id=served.pair_id, annotator_id=user, choice="a")
    rows = storage.judgment_rows(db, kinds=("train", "imported"))
    assert len(rows) == 5 and {(r.system_a, r.system_b, r.source) for r in rows} == {("alpha", "beta", "a.jsonl")}
    assert {(r.version_a, r.version_b) for r in rows} == {(None, None)}
    assert storage.judgment_rows(db, kinds=("train",)) == []
    with pytest.raises(ValueError, match="DPO has no pairs"):  # the round's own sampled pairs only
        dpo_examples(db, storage.current_policy(db), PolicyConfig())
    assert annotation_quality(db)["judgments"] == 5  # agreement counts people's work on them


def test_prior_judgments_stay_out_of_agreement_and_exports_unless_asked(db, tmp_path: Path) -> None:
    import_kind(db, "pairs", jsonl(tmp_path / "a.jsonl", pair_records(4)), judgments_wanted=1)
    import_kind(db, "preferences", jsonl(tmp_path / "p.jsonl", [{"prompt": f"q{i}", "chosen": f"good {i}",
                                                              "rejected": f"bad {i}"} for i in range(3)]))
    user = storage.create_annotator(db, "ann", "password123").id
    while (served := storage.next_pair_for(db, user)) is not None:
        storage.record_judgment(db, pair_id=served.pair_id, annotator_id=user,
                                choice="a" if served.pair_id % 2 else "b")
    quality = annotation_quality(db)
    assert quality["judgments"] == 4 and storage.status_counts(db)["counts"]["judgments"] == 4
    export_preferences(db, tmp_path / "plain", fmt="jsonl", test_fraction=0.0)
    plain = [json.loads(line) for line in (tmp_path / "plain" / "train.jsonl").read_text().splitlines()]
    assert len(plain) == 4 and not any(row["prior"] for row in plain)
    for row in plain:  # the winner's system is named, whichever side it was
        winner = row["chosen"][0]["content"].split()[0]
        assert row["system_chosen"] == winner and {row["system_chosen"], row["system_rejected"]} == {"alpha", "beta"}
        assert row["source"] == "a.jsonl" and json.loads(row["metadata"])["row"] in range(4)
        assert row["policy_version_chosen"] is None
    result = export_preferences(db, tmp_path / "all", fmt="jsonl", test_fraction=0.0, include_prior=True)
    rows = [json.loads(line) for line in (tmp_path / "all" / "train.jsonl").read_text().splitlines()]
    priors = [row for row in rows if row["prior"]]
    assert result.n_rows == 7 and len(priors) == 3
    assert {(p["chosen"][0]["content"], p["rejected"][0]["content"], p["source"], p["n_annotators"])
            for p in priors} == {(f"good {i}", f"bad {i}", "p.jsonl", 0) for i in range(3)}
    assert "Prior judgments (imported preference datasets, no annotator): 3 rows" in (
        tmp_path / "all" / "README.md").read_text()
