"""`rlhf quickstart`: bad input refused without changes, a second run reuses the workspace and keeps
judgments, the small first batch, and the "preparing the first pairs" screen in a real browser."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from browser_utils import PAIR_SHOWN, add_pairs, free_port, login, shown_texts
from process_utils import ROOT, log_match, rlhf_process, wait_for

import storage
from labeling_app import AppServices, serve
from labeling_app.annotation import Annotation, start_of_today
from labeling_app.render import NO_PAIRS_MESSAGE, empty_markdown
from rlhf_core.loop import sampling
from rlhf_core.loop.sampling import PoolTopper, SamplingProgress
from rlhf_core.training.workspace_stack import load_stack
from rlhf_core.workspace import init_workspace, open_workspace


def _quickstart(*args: str) -> subprocess.CompletedProcess:
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}
    return subprocess.run([sys.executable, "-m", "rlhf_core", "quickstart", *args], capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=120)


def test_directory_with_other_files_is_refused_unchanged(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    result = _quickstart(str(tmp_path), "--port", str(free_port()))
    assert result.returncode == 1
    assert result.stderr.strip().count("\n") == 0
    assert "not an rlhf workspace" in result.stderr and str(tmp_path) in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def test_port_in_use_is_refused_unchanged(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        result = _quickstart(str(tmp_path / "qs"), "--port", str(busy.getsockname()[1]))
    assert result.returncode == 1
    assert re.fullmatch(r"error: port \d+ on 127\.0\.0\.1 is in use; pick another with --port", result.stderr.strip())
    assert not (tmp_path / "qs").exists()


def _logins(log: Path) -> dict[str, str]:
    return dict(re.findall(r"^\s+(annotator|operator)\s+password: (\S+)$", log.read_text(), re.M))


def _run_until_ready(directory: Path, log: Path, *extra: str) -> None:
    """Quickstart until its logins are printed, then SIGTERM; it must stop cleanly (exit 0)."""
    proc = rlhf_process("quickstart", str(directory), "--port", str(free_port()), *extra, log=log)
    try:
        wait_for(lambda: log_match(log, r"Open http\S+ and log in"), "quickstart ready", 180, proc, log)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(90) == 0, log.read_text()[-2000:]
    finally:
        if proc.poll() is None:
            proc.kill()


@pytest.mark.slow
def test_second_run_reuses_workspace_and_keeps_judgments(tmp_path: Path) -> None:
    qs = tmp_path / "qs"
    _run_until_ready(qs, tmp_path / "first.log")
    first = _logins(tmp_path / "first.log")
    assert set(first) == {"annotator", "operator"}
    ws = open_workspace(qs)
    assert ws.config.loop.auto_round_every > 0 and ws.config.profile in ("cpu", "gpu")
    assert ws.config.sampling.first_batch_pairs > 0
    db = ws.database()
    assert storage.count_prompts(db) > 0
    add_pairs(db, [("kept a", "kept b")])  # (on a prompt of its own)
    prompts = storage.count_prompts(db)
    user = storage.authenticate(db, "annotator", first["annotator"])
    assert user is not None and user.role == "annotator"
    shown = storage.annotator_screen(db, user.id, lease_seconds=600, since=start_of_today())
    assert shown.pair is not None  # ours, or one the model sampled meanwhile
    storage.submit_verdict(db, user.id, token=shown.token, pick="left", lease_seconds=600, since=start_of_today())
    judgments = len(storage.judgment_rows(db))

    _run_until_ready(qs, tmp_path / "second.log")
    second = (tmp_path / "second.log").read_text()
    assert "reused" in second and "0 prompts imported" in second
    assert _logins(tmp_path / "second.log") == {} and "--reset-passwords" in second
    assert storage.count_prompts(db) == prompts and len(storage.judgment_rows(db)) == judgments == 1
    assert storage.authenticate(db, "annotator", first["annotator"]) is not None

    _run_until_ready(qs, tmp_path / "third.log", "--reset-passwords")
    third = _logins(tmp_path / "third.log")
    assert set(third) == {"annotator", "operator"} and third["annotator"] != first["annotator"]
    assert storage.authenticate(db, "annotator", third["annotator"]) is not None
    assert storage.authenticate(db, "annotator", first["annotator"]) is None
    db.dispose()


@pytest.fixture
def tiny_ws(tmp_path, tiny_model_dir):  # noqa: ANN001, ANN201
    ws, _ = init_workspace(tmp_path / "ws", model=str(tiny_model_dir))
    ws.config.sampling.max_new_tokens = 12
    ws.config.sampling.per_prompt = 3
    ws.config.sampling.batch_size = 12
    ws.config.sampling.pool_refill_pairs = 8
    ws.config.sampling.first_batch_pairs = 2
    db = ws.database()
    storage.add_prompts(db, [[{"role": "user", "content": f"tell me about topic {i}"}] for i in range(8)])
    yield ws, db
    db.dispose()


def test_empty_pool_samples_a_small_first_batch_then_the_rest(tiny_ws, monkeypatch) -> None:  # noqa: ANN001
    ws, db = tiny_ws
    calls: list[tuple[int, int, int]] = []
    real = sampling.sample_pairs

    def recording(ws_, db_, stack, **kw):  # noqa: ANN001, ANN003, ANN202
        result = real(ws_, db_, stack, **kw)
        calls.append((ws_.config.sampling.batch_size, kw["n_pairs"], result.pairs))
        return result

    monkeypatch.setattr(sampling, "sample_pairs", recording)
    topper = PoolTopper(ws, db)
    assert topper.request_top_up() is True
    topper.wait(120)
    assert topper.last_error is None and topper.progress() is None
    assert calls[0][:2] == (3, 2)  # one prompt's responses (per_prompt), 2 pairs wanted
    assert calls[1][:2] == (12, 8 - calls[0][2])
    assert topper.last_result.pairs == sum(c[2] for c in calls) == storage.open_pair_count(db) >= 8


@pytest.mark.browser
def test_preparing_state_shows_progress_then_first_pair_without_reload(tiny_ws, browser) -> None:  # noqa: ANN001
    ws, db = tiny_ws
    storage.create_annotator(db, "alice", "correct-horse-9")
    release = threading.Event()

    def gated_stack(w):  # noqa: ANN001, ANN202 - the model "loads" until the test lets it
        release.wait(60)
        return load_stack(w)

    topper = PoolTopper(ws, db, stack_factory=gated_stack)
    served = serve(ws, db, AppServices(pool_topper=topper, sampling_progress=topper.progress),
                   port=free_port(), block=False, quiet=True)
    context = browser.new_context()
    try:
        page = context.new_page()
        page.set_default_timeout(15_000)
        topper.request_top_up()
        login(page, served.url, "alice")
        page.wait_for_selector("#no-pairs", state="visible")
        page.wait_for_function("() => document.querySelector('#no-pairs').innerText.includes('Loading the model')")
        assert "Preparing the first pairs from the model" in page.locator("#no-pairs").inner_text()
        navigations: list[str] = []
        page.on("framenavigated", lambda f: navigations.append(f.url))
        release.set()
        page.wait_for_selector(PAIR_SHOWN, state="visible", timeout=60_000)
        assert all(shown_texts(page))
        assert page.locator("#no-pairs").is_hidden()
        assert navigations == []
    finally:
        release.set()
        context.close()
        topper.wait(120)
        served.close()


def test_empty_area_shows_pairs_ready_of_wanted_only_while_sampling(tiny_ws) -> None:  # noqa: ANN001
    ws, db = tiny_ws
    user = storage.create_annotator(db, "alice", "correct-horse-9")
    state: dict[str, SamplingProgress | None] = {"now": SamplingProgress(ready=3, wanted=16)}
    annotation = Annotation(ws, db, AppServices(sampling_progress=lambda: state["now"]))
    text = empty_markdown(annotation.screen(user))
    assert "Preparing the first pairs from the model" in text and "**3 of 16** pairs ready" in text
    state["now"] = None
    assert empty_markdown(annotation.screen(user)) == NO_PAIRS_MESSAGE
    state["now"] = SamplingProgress(ready=0, wanted=16)
    add_pairs(db, [("a", "b")])
    shown = annotation.screen(user)
    assert shown.pair is not None and shown.sampling is None  # a pair on screen: no progress asked for
