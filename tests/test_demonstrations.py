"""Demonstrations (stage 1) outside the browser: storing one written on the page (once on a repeat; an edit
also the preference "edited > original"; bad texts refused with a sentence; the author audited), on SQLite and
PostgreSQL; `rlhf demos import` in TRL's SFT formats and malformed files refused in one line with nothing
written; `rlhf export --what demos` round-tripping through import, and TRL's SFTTrainer training one step on
the export as it is."""

from __future__ import annotations

import json
import random
import re
import sys
from pathlib import Path

import pytest
from conftest import import_kind

import storage
from rlhf_core.cli.main import main as rlhf_main
from rlhf_core.data.demonstration_files import export_demonstrations, read_demonstration_file
from rlhf_core.data.export import ExportError
from rlhf_core.data.file_checks import InputFileError
from rlhf_core.workspace import init_workspace
from storage import (
    DemonstrationError,
    DemonstrationSpec,
    JudgmentError,
    add_demonstrations,
    audit_events,
    count_prompts,
    create_annotator,
    demonstration_counts,
    demonstration_rows,
    next_pair_for,
    record_demonstration,
    record_generations,
    serve_token,
    set_active,
)


def jsonl(*records: object) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in records).encode()


# -- written on the page (storage) ---------------------------------------------------------------------------
@pytest.fixture
def served(db):  # noqa: ANN001, ANN201
    """A pair served to alice: (db, alice's id, its serve token, the text shown left, the text shown right)."""
    storage.add_prompts(db, [[{"role": "user", "content": "Name a fruit."}]])
    prompt = storage.list_prompts(db)[0]
    record_generations(db, prompt_id=prompt.id, policy_version_id=0, responses=[("An apple.", 3), ("Banana!", 2)],
                       gen_params={}, pairs=[(0, 1)])
    alice = create_annotator(db, "alice", "password123")
    shown = next_pair_for(db, alice.id, rng=random.Random(0))
    return db, alice.id, serve_token(shown.pair_id, shown.served_at), shown.left_text, shown.right_text


def test_a_written_answer_is_stored_once_and_its_author_audited(served) -> None:  # noqa: ANN001
    db, alice, token, _, _ = served
    first = record_demonstration(db, alice, token=token, text="  A ripe mango.\n", actor="alice", address="10.0.0.7")
    again = record_demonstration(db, alice, token=token, text="A ripe mango.", actor="alice")  # a double click
    assert first.created and not again.created and again.demonstration_id == first.demonstration_id
    assert not first.edited
    (row,) = demonstration_rows(db)
    assert (row.text, row.author, row.pair_id, row.edited_sample_id, row.source) == (
        "A ripe mango.", "alice", first.pair_id, None, "labeling page")
    events = audit_events(db, action="demonstration")
    assert len(events) == 1 and events[0].actor == "alice" and events[0].address == "10.0.0.7"
    assert events[0].params == {"demonstration": first.demonstration_id, "pair": first.pair_id, "edited_sample": None}


def test_an_edit_yields_the_demonstration_and_the_preference(served) -> None:  # noqa: ANN001
    db, alice, token, left, right = served
    saved = record_demonstration(db, alice, token=token, text=right + " It is sweet.", start_side="right")
    assert saved.created and saved.edited
    (edit,) = demonstration_rows(db, edits_only=True)
    assert edit.text == right + " It is sweet." and edit.original_text == right  # edited > original
    # Started from a response but saved unchanged: a demonstration, but no preference (nothing was edited).
    same = record_demonstration(db, alice, token=token, text=left, start_side="left")
    assert same.created and not same.edited
    assert demonstration_counts(db) == {"demonstrations": 2, "written": 2, "edits": 1, "imported": 0}


@pytest.mark.parametrize(("text", "sentence"), [
    ("   ", "the answer is empty"),
    ("bell \x07 here", "control character U+0007"),
    ("nul \x00", "control character U+0000"),
    ("x\ud800y", "unpaired surrogate U+D800"),
    ("y" * (storage.MAX_DEMONSTRATION_CHARS + 1), f"over the limit of {storage.MAX_DEMONSTRATION_CHARS}"),
])
def test_bad_texts_are_refused_with_a_sentence(served, text: str, sentence: str) -> None:  # noqa: ANN001
    db, alice, token, _, _ = served
    with pytest.raises(DemonstrationError, match=re.escape(sentence)) as refused:
        record_demonstration(db, alice, token=token, text=text)
    assert str(refused.value).startswith("Not saved:") and str(refused.value).endswith(".")
    assert demonstration_counts(db)["demonstrations"] == 0


def test_only_the_pair_on_screen_and_an_active_account(served) -> None:  # noqa: ANN001
    db, alice, token, _, _ = served
    bob = create_annotator(db, "bob", "password123")
    for who, tok, words in ((alice, None, "no pair is shown"), (alice, "999:20200101T000000000000", "no longer shown"),
                            (bob.id, token, "no longer shown")):
        with pytest.raises(DemonstrationError, match=words):
            record_demonstration(db, who, token=tok, text="An answer.")
    with pytest.raises(DemonstrationError, match="start_side"):
        record_demonstration(db, alice, token=token, text="An answer.", start_side="middle")
    set_active(db, "alice", False)
    with pytest.raises(JudgmentError, match="disabled"):
        record_demonstration(db, alice, token=token, text="An answer.")
    assert demonstration_counts(db)["demonstrations"] == 0


# -- import ----------------------------------------------------------------------------------------------------
Q = [{"role": "user", "content": "What is 2 + 2?"}]
GOOD = [
    {"messages": [*Q, {"role": "assistant", "content": "4."}]},
    {"prompt": "Say hi.", "completion": "Hello!"},
    {"prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Capital of France?"}],
     "completion": [{"role": "assistant", "content": "Paris."}]},
]


def test_trl_sft_formats_import_and_repeats_are_counted(db, tmp_path: Path) -> None:  # noqa: ANN001
    path = tmp_path / "demos.jsonl"
    path.write_bytes(jsonl(*GOOD, GOOD[0]))
    specs = read_demonstration_file(path)
    assert [(s.messages[-1]["content"], s.text) for s in specs] == [
        ("What is 2 + 2?", "4."), ("Say hi.", "Hello!"), ("Capital of France?", "Paris."), ("What is 2 + 2?", "4.")]
    assert specs[2].messages[0] == {"role": "system", "content": "Be brief."}
    result = storage.add_demonstrations(db, specs, source="demos.jsonl", actor="cli:test")
    assert (result.added, result.duplicates, result.prompts_added) == (3, 1, 3)
    assert storage.add_demonstrations(db, specs, source="again").added == 0
    assert count_prompts(db, split="train") == 3
    assert [e.params["added"] for e in audit_events(db, action="demos_import")] == [3]  # no actor: no row

    csv = tmp_path / "demos.csv"
    csv.write_text('prompt,completion,messages\n"Two, words",Fine.,\n,,"[{""role"": ""user"", ""content"": ""Yes?""}, '
                   '{""role"": ""assistant"", ""content"": ""No.""}]"\n', encoding="utf-8")
    assert [(s.messages[-1]["content"], s.text) for s in read_demonstration_file(csv)] == [("Two, words", "Fine."),
                                                                                          ("Yes?", "No.")]


LONG = 20_000
MALFORMED: list[tuple[str, str, bytes, str]] = [
    ("not UTF-8", "d.jsonl", jsonl(GOOD[1]) + b'{"prompt": "caf\xe9", "completion": "x"}\n',
     "d.jsonl:2: not UTF-8 text"),
    ("invalid JSON", "d.jsonl", jsonl(GOOD[1]) + b'{"prompt": "x",}\n', "d.jsonl:2: not valid JSON"),
    ("not an object", "d.jsonl", jsonl(["prompt", "completion"]), "d.jsonl:1: expected an object"),
    ("neither shape", "d.jsonl", jsonl({"text": "x"}), "d.jsonl:1: no 'messages' (ending with the assistant's"),
    ("prompt without completion", "d.jsonl", jsonl({"prompt": "x"}), "d.jsonl:1: no 'messages'"),
    ("messages end with the user", "d.jsonl", jsonl({"messages": Q}), "d.jsonl:1: 'messages' must list the prompt"),
    ("no user turn before the answer", "d.jsonl",
     jsonl({"messages": [{"role": "system", "content": "s"}, {"role": "assistant", "content": "a"}]}),
     "d.jsonl:1: the last message must be from the user"),
    ("last message not the assistant", "d.jsonl",
     jsonl({"messages": [*Q, {"role": "user", "content": "again"}]}), "d.jsonl:1: the last message must be the"),
    ("empty completion", "d.jsonl", jsonl(GOOD[1], {"prompt": "x", "completion": "  "}),
     "d.jsonl:2: the answer in 'completion' is empty"),
    ("completion not text", "d.jsonl", jsonl({"prompt": "x", "completion": 4}), "must be text, not int"),
    ("completion of two messages", "d.jsonl",
     jsonl({"prompt": Q, "completion": [{"role": "assistant", "content": "a"}, {"role": "assistant",
                                                                                 "content": "b"}]}),
     "d.jsonl:1: 'completion' as messages must be one"),
    ("control character in the answer", "d.jsonl", jsonl({"prompt": "x", "completion": "bell\u0007"}),
     "d.jsonl:1: completion contains the control character U+0007"),
    ("lone surrogate in the answer", "d.jsonl", b'{"prompt": "x", "completion": "a\\ud800"}\n',
     "d.jsonl:1: completion contains the unpaired surrogate U+D800"),
    ("oversized answer", "d.jsonl", jsonl({"prompt": "x", "completion": "y" * (LONG + 1)}),
     f"d.jsonl:1: completion is {LONG + 1} characters long, over the limit of {LONG}"),
    ("oversized prompt", "d.jsonl", jsonl({"prompt": "y" * (LONG + 1), "completion": "x"}),
     "d.jsonl:1: the prompt is 20001 characters long"),
    ("bad role", "d.jsonl", jsonl({"messages": [{"role": "robot", "content": "x"}, {"role": "assistant",
                                                                                    "content": "a"}]}),
     "d.jsonl:1: messages[0] must be"),
    ("empty file", "d.jsonl", b"\n\n", "d.jsonl: no demonstrations found"),
    ("CSV without the columns", "d.csv", b"question,answer\nx,y\n", "d.csv:1: a CSV file needs a 'prompt' column"),
    ("ragged CSV", "d.csv", b"prompt,completion\nx,y\nz\n", "d.csv:3: 1 fields where the header has 2"),
    ("unclosed quote in CSV", "d.csv", b'prompt,completion\n"x,y\nz,w\n', "d.csv:2: malformed CSV"),
    ("bad messages cell", "d.csv", b'messages\n"[{not json"\n', "d.csv:2: the messages cell is not valid JSON"),
    ("unknown format", "d.txt", b"hello\n", "d.txt: unknown format"),
]


def test_at_least_ten_malformed_demonstration_files() -> None:
    assert len(MALFORMED) >= 10 and len({case[0] for case in MALFORMED}) == len(MALFORMED)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return init_workspace(tmp_path_factory.mktemp("demos") / "ws")[0].root


def run_rlhf(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, *args: str) -> tuple[int, str, str]:
    """`rlhf ARGS` in this process, through the console script's own error handling: (code, stdout, stderr)."""
    monkeypatch.setattr(sys, "argv", ["rlhf", *args])
    capsys.readouterr()
    code = 0
    try:
        rlhf_main()
    except SystemExit as exited:
        code = exited.code
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.parametrize(("name", "content", "fragment"), [c[1:] for c in MALFORMED], ids=[c[0] for c in MALFORMED])
def test_malformed_file_is_refused_in_one_line_and_nothing_is_written(
    workspace: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
    name: str, content: bytes, fragment: str,
) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(InputFileError) as refused:
        read_demonstration_file(path)
    assert fragment in str(refused.value) and str(path) in str(refused.value)
    code, _, err = run_rlhf(capsys, monkeypatch, "demos", "import", str(path), "-w", str(workspace))
    assert code == 1 and err.startswith("error: ") and fragment in err
    assert err.strip().count("\n") == 0 and "Traceback" not in err
    db = init_workspace(workspace)[0].database()
    assert demonstration_counts(db)["demonstrations"] == 0 and count_prompts(db) == 0
    db.dispose()


@pytest.mark.parametrize("case", ["control character in the answer", "lone surrogate in the answer"])
def test_refused_files_write_nothing_on_either_database(db, tmp_path: Path, case: str) -> None:  # noqa: ANN001
    _, name, content, _ = next(c for c in MALFORMED if c[0] == case)
    (tmp_path / name).write_bytes(jsonl(GOOD[1]) + content)
    with pytest.raises(InputFileError):
        import_kind(db, "demonstrations", tmp_path / name, imported_by="test")
    assert demonstration_counts(db)["demonstrations"] == 0 and count_prompts(db) == 0


# -- export and the round trip ------------------------------------------------------------------------------------
def demos_db(db) -> list[DemonstrationSpec]:  # noqa: ANN001
    specs = [DemonstrationSpec([{"role": "user", "content": f"Question {i}?"}], f"Answer number {i}.")
             for i in range(10)]
    specs.append(DemonstrationSpec([{"role": "system", "content": "Brief."}, *Q], "4"))
    add_demonstrations(db, specs, source="seed")
    return specs


@pytest.mark.parametrize("fmt", ["hf", "jsonl", "parquet"])
def test_export_and_import_round_trip(sqlite_db, tmp_path: Path, fmt: str) -> None:  # noqa: ANN001
    specs = demos_db(sqlite_db)
    result = export_demonstrations(sqlite_db, tmp_path / "out", fmt=fmt, test_fraction=0.2)
    assert (result.n_rows, result.n_train + result.n_test) == (11, 11) and result.n_test >= 1
    assert "TRL prompt-completion" in (tmp_path / "out" / "README.md").read_text()
    sources = [tmp_path / "out"] if fmt == "hf" else sorted((tmp_path / "out").glob(f"*.{fmt}"))
    if fmt == "parquet":  # a parquet file is read through datasets: the reader takes JSONL, CSV or a datasets dir
        import datasets

        for source in sources:
            datasets.load_dataset("parquet", data_files=str(source), split="train").save_to_disk(
                str(tmp_path / source.stem))
        sources = [tmp_path / source.stem for source in sources]
    back = [spec for source in sources for spec in read_demonstration_file(source)]
    assert sorted((json.dumps(s.messages), s.text) for s in back) == sorted((json.dumps(s.messages), s.text)
                                                                            for s in specs)
    with pytest.raises(ExportError, match="not empty"):
        export_demonstrations(sqlite_db, tmp_path / "out", fmt=fmt)


def test_cli_export_what_demos(tmp_path: Path, capsys, monkeypatch) -> None:  # noqa: ANN001
    workspace = init_workspace(tmp_path / "ws")[0].root
    path = tmp_path / "in.jsonl"
    path.write_bytes(jsonl(*GOOD))
    code, out, err = run_rlhf(capsys, monkeypatch, "demos", "import", str(path), "-w", str(workspace))
    assert code == 0 and "Imported 3 demonstrations" in out, err
    code, out, _ = run_rlhf(capsys, monkeypatch, "status", "--json", "-w", str(workspace))
    assert json.loads(out)["demonstrations"] == {"demonstrations": 3, "written": 0, "edits": 0, "imported": 3}
    code, out, err = run_rlhf(capsys, monkeypatch, "export", "--what", "demos", "--format", "jsonl", "--standard",
                              "--out", str(tmp_path / "sft"), "-w", str(workspace))
    assert code == 0 and "Exported 3 demonstrations" in out, err
    rows = [json.loads(line) for f in sorted((tmp_path / "sft").glob("*.jsonl")) for line in f.read_text().splitlines()]
    assert {(r["prompt"], r["completion"]) for r in rows} == {
        ("What is 2 + 2?", "4."), ("Say hi.", "Hello!"), ("System: Be brief.\n\nUser: Capital of France?", "Paris.")}
    code, _, err = run_rlhf(capsys, monkeypatch, "export", "--what", "demos", "--include-ties", "--out",
                            str(tmp_path / "x"), "-w", str(workspace))
    assert code == 2 and "--include-ties does not apply to --what demos" in err


def test_trl_sft_trainer_trains_one_step_on_the_export(sqlite_db, tmp_path: Path, tiny_model_dir: Path) -> None:  # noqa: ANN001
    trl = pytest.importorskip("trl", reason="trl is not installed (pip install trl)")
    from datasets import load_from_disk
    from transformers import AutoModelForCausalLM, AutoTokenizer

    demos_db(sqlite_db)
    export_demonstrations(sqlite_db, tmp_path / "hf", fmt="hf")
    train = load_from_disk(str(tmp_path / "hf"))["train"]
    args = trl.SFTConfig(output_dir=str(tmp_path / "sft"), max_steps=1, report_to=[], per_device_train_batch_size=2,
                         bf16=False, use_cpu=True, save_strategy="no", logging_steps=1, disable_tqdm=True,
                         gradient_checkpointing=False)
    trainer = trl.SFTTrainer(model=AutoModelForCausalLM.from_pretrained(tiny_model_dir), args=args,
                             train_dataset=train, processing_class=AutoTokenizer.from_pretrained(tiny_model_dir))
    assert trainer.completion_only_loss  # prompt-completion data: TRL masks the prompt, as `rlhf train-sft` does
    output = trainer.train()
    assert trainer.state.global_step == 1 and 0.0 < output.training_loss < 20.0
