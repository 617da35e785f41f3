"""Bad input wherever a file or a form enters: malformed prompt files are refused with one line
naming the file and line (the byte offset for non-UTF-8) and nothing is written; the login form
and the reason box refuse what the database could not store, without a traceback."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from browser_utils import PASSWORD, add_pairs, free_port

from labeling_app import serve
from rlhf_core.cli.main import main as rlhf_main
from rlhf_core.data.prompt_files import PromptFileError, read_prompt_file
from rlhf_core.workspace import init_workspace
from storage import count_prompts, create_annotator, judgment_rows

LIMIT = 20_000  # labeling.max_prompt_chars by default


def jsonl(*records: object) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in records).encode()


OK = {"prompt": "fine"}
# (id, file name, content, fragment the one-line error must hold). Line numbers as an editor shows them.
MALFORMED: list[tuple[str, str, bytes, str]] = [
    ("latin-1 byte", "p.jsonl", jsonl(OK) + b'{"prompt": "caf\xe9"}\n',
     "p.jsonl:2: not UTF-8 text (byte 0xe9 at byte offset 34)"),
    ("utf-16 file", "p.jsonl", '{"prompt": "x"}\n'.encode("utf-16"),
     "p.jsonl:1: not UTF-8 text (byte 0xff at byte offset 0)"),
    ("truncated multibyte", "p.jsonl", jsonl(OK) + b'{"prompt": "euro \xe2\x82',
     "p.jsonl:2: not UTF-8 text (byte 0xe2 at byte offset 36)"),
    ("raw NUL in JSON", "p.jsonl", jsonl(OK, OK) + b'{"prompt": "a\x00b"}\n', "p.jsonl:3: not valid JSON"),
    ("NUL escape", "p.jsonl", jsonl(OK, {"prompt": "a\u0000b"}),
     "p.jsonl:2: prompt contains the control character U+0000"),
    ("ESC escape", "p.jsonl", jsonl({"prompt": "red \u001b[31m"}),
     "p.jsonl:1: prompt contains the control character U+001B"),
    ("DEL escape", "p.jsonl", jsonl(OK, OK, OK, {"prompt": "x\u007f"}),
     "p.jsonl:4: prompt contains the control character U+007F"),
    ("vertical tab in a message", "p.jsonl",
     jsonl({"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "u\u000bv"}]}),
     "p.jsonl:1: messages[1].content contains the control character U+000B"),
    ("lone surrogate", "p.jsonl", b'{"prompt": "x\\ud800y"}\n',
     "p.jsonl:1: prompt contains the unpaired surrogate U+D800"),
    ("trailing comma", "p.jsonl", jsonl(OK, OK) + b'{"prompt": "x",}\n', "p.jsonl:3: not valid JSON"),
    ("array record", "p.jsonl", jsonl(["prompt", "x"]), "p.jsonl:1: expected an object"),
    ("no prompt field", "p.jsonl", jsonl(OK, {"question": "x"}), "p.jsonl:2: no 'prompt' or 'messages' field"),
    ("prompt not text", "p.jsonl", jsonl({"prompt": 42}), "p.jsonl:1: 'prompt' must be text"),
    ("empty messages", "p.jsonl", jsonl({"messages": []}), "p.jsonl:1: 'messages' must be a non-empty list"),
    ("bad role", "p.jsonl", jsonl({"messages": [{"role": "robot", "content": "x"}]}), "p.jsonl:1: messages[0] must be"),
    ("assistant last", "p.jsonl", jsonl({"messages": [{"role": "user", "content": "q"}, {"role": "assistant",
     "content": "a"}]}),
     "p.jsonl:1: the last message must be from the user"),
    ("blank prompt", "p.jsonl", jsonl(OK, {"prompt": "   "}), "p.jsonl:2: the prompt is empty"),
    ("oversized prompt", "p.jsonl", jsonl(OK, {"prompt": "x" * (LIMIT + 1)}),
     f"p.jsonl:2: the prompt is {LIMIT + 1} characters long, over labeling.max_prompt_chars = {LIMIT}"),
    ("oversized conversation", "p.jsonl",
     jsonl({"messages": [{"role": "system", "content": "s" * LIMIT}, {"role": "user", "content": "q"}]}),
     "p.jsonl:1: the prompt is 20001 characters long"),
    ("empty file", "p.jsonl", b"", "p.jsonl: no prompts found"),
    ("blank lines only", "p.jsonl", b"\n  \n\r\n", "p.jsonl: no prompts found"),
    ("unclosed quote", "p.csv", b'prompt,id\nfirst,1\n"second, with a quote left open,2\nthird,3\n',
     "p.csv:3: malformed CSV"),
    ("row with an extra field", "p.csv", b"prompt,id\nfirst,1\nsecond,2,oops\n",
     "p.csv:3: 3 fields where the header has 2"),
    ("row with a missing field", "p.csv", b"prompt,id\nfirst\n", "p.csv:2: 1 fields where the header has 2"),
    ("no prompt column", "p.csv", b"question,id\nx,1\n", "p.csv:1: a CSV file needs a 'prompt' column"),
    ("raw NUL in CSV", "p.csv", b"prompt\nok\nbad\x00row\n", "p.csv:3: prompt contains the control character U+0000"),
    ("control character in CSV", "p.csv", b"prompt\nok\n\"multi\nline\"\nbell\x07\n",
     "p.csv:5: prompt contains the control character U+0007"),
    ("cp1252 CSV", "p.csv", b"prompt\nna\xefve\n", "p.csv:2: not UTF-8 text (byte 0xef at byte offset 9)"),
    ("empty CSV cell", "p.csv", b'prompt,id\n"",1\n', "p.csv:2: the prompt is empty"),
    ("header only", "p.csv", b"prompt\n", "p.csv: no prompts found"),
    ("empty CSV file", "p.csv", b"", "p.csv:1: empty CSV file"),
    ("oversized CSV prompt", "p.csv", b"prompt\n" + b"y" * (LIMIT + 5) + b"\n",
     "p.csv:2: the prompt is 20005 characters"),
    ("unknown format", "p.txt", b"hello\n", "p.txt: unknown format"),
]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    ws, _ = init_workspace(tmp_path_factory.mktemp("bad-input") / "ws")
    return ws.root


def run_rlhf(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, *args: str) -> tuple[int, str]:
    """`rlhf ARGS` in this process, through the console script's own error handling."""
    monkeypatch.setattr(sys, "argv", ["rlhf", *args])
    capsys.readouterr()
    with pytest.raises(SystemExit) as exited:
        rlhf_main()
    return exited.value.code, capsys.readouterr().err


def test_at_least_25_malformed_files() -> None:
    assert len(MALFORMED) >= 25 and len({case[0] for case in MALFORMED}) == len(MALFORMED)


@pytest.mark.parametrize(("name", "content", "fragment"), [c[1:] for c in MALFORMED], ids=[c[0] for c in MALFORMED])
def test_malformed_prompt_file_is_refused_in_one_line_and_nothing_is_written(
    workspace: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
    name: str, content: bytes, fragment: str,
) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(PromptFileError) as refused:
        read_prompt_file(path, max_prompt_chars=LIMIT)
    assert fragment in str(refused.value) and str(path) in str(refused.value)
    code, err = run_rlhf(capsys, monkeypatch, "prompts", "import", str(path), "-w", str(workspace))
    assert code == 1 and err.startswith("error: ") and fragment in err
    assert err.strip().count("\n") == 0 and "Traceback" not in err
    db = init_workspace(workspace)[0].database()
    assert count_prompts(db) == 0
    db.dispose()


@pytest.mark.parametrize("case", ["NUL escape", "lone surrogate", "unclosed quote", "oversized prompt"])
def test_refused_files_write_nothing_on_either_database(
    db, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, case: str,  # noqa: ANN001
) -> None:
    """On PostgreSQL too (which cannot store NUL or a lone surrogate): refused before any insert."""
    _, name, content, fragment = next(c for c in MALFORMED if c[0] == case)
    ws, _ = init_workspace(tmp_path / "ws", db_url=db.url)
    (tmp_path / name).write_bytes(jsonl(OK) + content if name.endswith(".jsonl") and case != "lone surrogate"
                                  else content)
    code, err = run_rlhf(capsys, monkeypatch, "prompts", "import", str(tmp_path / name), "-w", str(ws.root))
    assert code == 1 and "Traceback" not in err and err.strip().count("\n") == 0
    assert count_prompts(db) == 0


def test_not_a_datasets_directory_is_refused(tmp_path: Path) -> None:
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / "state.json").write_text("{}")
    with pytest.raises(PromptFileError, match="not a directory saved by datasets.save_to_disk"):
        read_prompt_file(tmp_path / "dir", max_prompt_chars=LIMIT)


def test_well_formed_edge_cases_still_import(tmp_path: Path) -> None:
    """A BOM, CRLF line ends, a tab, a quoted multi-line CSV field and a prompt of exactly the limit."""
    (tmp_path / "ok.jsonl").write_bytes(b"\xef\xbb\xbf" + jsonl({"prompt": "tab\there"}).replace(b"\n", b"\r\n")
                                        + jsonl({"prompt": "x" * LIMIT}))
    assert [c[-1]["content"][:8] for c in read_prompt_file(tmp_path / "ok.jsonl", max_prompt_chars=LIMIT)] == [
        "tab\there", "x" * 8]
    (tmp_path / "ok.csv").write_bytes(b'prompt,id\r\n"two\r\nlines, one cell",1\r\nplain,2\r\n')
    assert [c[0]["content"] for c in read_prompt_file(tmp_path / "ok.csv", max_prompt_chars=LIMIT)] == [
        "two\r\nlines, one cell", "plain"]


def test_a_smaller_configured_limit_is_what_import_enforces(
    workspace: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = workspace / "rlhf.toml"
    original = config.read_text()
    config.write_text(original.replace(f"max_prompt_chars = {LIMIT}", "max_prompt_chars = 10"))
    try:
        (tmp_path / "p.jsonl").write_bytes(jsonl({"prompt": "short"}, {"prompt": "eleven char"}))
        code, err = run_rlhf(capsys, monkeypatch, "prompts", "import", str(tmp_path / "p.jsonl"), "-w", str(workspace))
    finally:
        config.write_text(original)
    assert code == 1 and "p.jsonl:2: the prompt is 11 characters long, over labeling.max_prompt_chars = 10" in err


# -- forms ------------------------------------------------------------------------------------------
@pytest.fixture
def app_on(tmp_path: Path, db) -> Iterator[tuple[str, object]]:  # noqa: ANN001 - conftest's db (SQLite, PostgreSQL)
    """The app served on the conftest database (SQLite, then PostgreSQL), with one annotator."""
    ws, _ = init_workspace(tmp_path / "ws", db_url=db.url)
    # These tests send more refused logins than the throttle allows; throttling has its own tests.
    ws.config.auth.max_failures = 100
    create_annotator(db, "alice", PASSWORD)
    served = serve(ws, db, None, port=free_port(), block=False, quiet=True)
    yield served.url, db
    served.close()


BAD_LOGINS = [
    ("al\x00ice", PASSWORD),  # PostgreSQL cannot even compare a string holding NUL
    ("alice\x1b", PASSWORD),
    ("a" * 10_000, PASSWORD),
    ("alice", "p" * 100_000),
    ("alice", "pass\x00word"),
    ("\u202ealice", PASSWORD),  # a right-to-left override: not a printable name
]


def test_bad_login_forms_are_refused_like_a_wrong_password(app_on) -> None:  # noqa: ANN001
    url, _ = app_on
    with httpx.Client(base_url=url, timeout=30) as client:
        for username, password in BAD_LOGINS:
            response = client.post("/login", data={"username": username, "password": password})
            assert response.status_code == 400 and "Incorrect credentials" in response.text, repr(username[:20])
        assert client.post("/login", data={"username": "alice", "password": PASSWORD}).status_code == 200


def test_a_reason_with_a_control_character_is_refused_and_nothing_is_written(app_on) -> None:  # noqa: ANN001
    url, db = app_on
    add_pairs(db, [("sample a", "sample b")])
    with httpx.Client(base_url=url, timeout=30) as client:
        assert client.post("/login", data={"username": "alice", "password": PASSWORD}).status_code == 200
        shown = client.post("/gradio_api/run/next_pair", json={"data": [], "session_hash": "t"}).json()["data"]
        token = shown[3]
        refused = client.post("/gradio_api/run/judge_left",
                              json={"data": [token, None, "why\x00"], "session_hash": "t"})
        assert refused.status_code == 500 and "control character U+0000" in refused.text
        assert "Traceback" not in refused.text
        assert judgment_rows(db) == []
        saved = client.post("/gradio_api/run/judge_left", json={"data": [token, None, "why"], "session_hash": "t"})
        assert any(str(v).startswith("Saved") for v in saved.json()["data"])
    assert [r.rationale for r in judgment_rows(db)] == ["why"]


def test_the_notice_the_page_sends_back_is_kept_only_if_it_is_ours() -> None:
    """The "Check now" event echoes the page's last notice; a crafted one is dropped, not rendered."""
    from labeling_app.annotation import own_notice

    assert own_notice("Saved: Both bad on pair #12.") == "Saved: Both bad on pair #12."
    assert own_notice("Skipped pair #3.") == "Skipped pair #3."
    for crafted in ("Saved: <img src=x onerror=alert(1)> on pair #1.", "Skipped pair #3. [click](http://x)",
                    "anything", "", None):
        assert own_notice(crafted) == ""
