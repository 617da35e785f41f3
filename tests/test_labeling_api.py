"""The labeling page and the operator console through their HTTP/API surface (no browser): role checks on
operator events, private internal events, judgments bound to the caller's own lease, logins (one for both
pages), first operator."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from browser_utils import PASSWORD, RunningApp, add_pairs, free_port, start_app
from gradio_client import Client
from gradio_client.exceptions import AppError

from labeling_app import AppServices, serve
from rlhf_core.workspace import init_workspace
from storage import authenticate, get_annotator, judgment_rows, set_active

# Gradio's queue builds Dataframe payloads with pandas options pandas 3 deprecates; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:.*no_silent_downcasting", "ignore:The copy keyword is deprecated")


class RecordingSampler:
    def __init__(self) -> None:
        self.requests: list[int] = []

    def __call__(self, n: int) -> str:
        self.requests.append(n)
        return f"job {len(self.requests)}"


@pytest.fixture
def sampler() -> RecordingSampler:
    return RecordingSampler()


@pytest.fixture
def app(tmp_path: Path, sampler: RecordingSampler) -> Iterator[RunningApp]:
    running = start_app(tmp_path / "ws", services=AppServices(request_pairs=sampler),
                        users={"alice": "annotator", "bob": "annotator", "olga": "operator"})
    yield running
    running.close()


def client(app: RunningApp, user: str, url: str | None = None) -> Client:
    """A logged-in API client of the labeling page, or of the app at `url` (the console)."""
    return Client(url or app.url, auth=(user, PASSWORD), verbose=False, analytics_enabled=False, download_files=False)


def http(app: RunningApp, user: str) -> httpx.Client:
    """A logged-in HTTP session, calling events the way the page does (`POST /gradio_api/run/<name>`)."""
    session = httpx.Client(base_url=app.url, timeout=30)
    assert session.post("/login", data={"username": user, "password": PASSWORD}).status_code == 200
    return session


def run(session: httpx.Client, api_name: str, *data) -> httpx.Response:  # noqa: ANN002
    return session.post(f"/gradio_api/run/{api_name}", json={"data": list(data), "session_hash": "t"})


def token_of(response: httpx.Response) -> str:
    return next(v for v in response.json()["data"] if isinstance(v, str) and re.fullmatch(r"\d+:\d{8}T\d+", v))


def test_operator_events_refuse_annotators_even_through_the_api(app: RunningApp, sampler: RecordingSampler) -> None:
    annotator = client(app, "alice", app.operator_url)
    for api_name, args in [("/sample_pairs", (5,)), ("/operator_overview", ()), ("/operator_refresh", ())]:
        with pytest.raises(AppError, match="Only operators"):
            annotator.predict(*args, api_name=api_name)
    assert sampler.requests == []

    operator = client(app, "olga", app.operator_url)
    message, status = operator.predict(7, api_name="/sample_pairs")
    assert sampler.requests == [7] and "Requested 7 more pairs" in message and "Pairs open" in status
    status, users = operator.predict(api_name="/operator_overview")
    assert [row[:3] for row in users["data"]] == [
        ["alice", "annotator", "yes"], ["bob", "annotator", "yes"], ["olga", "operator", "yes"]]


def test_internal_events_are_not_public_api(app: RunningApp) -> None:
    endpoints = set(client(app, "alice").view_api(print_info=False, return_format="dict")["named_endpoints"])
    assert endpoints == {"/judge_left", "/judge_right", "/judge_tie", "/judge_both_bad", "/skip_pair", "/next_pair",
                         "/undo_judgment"}
    console = client(app, "alice", app.operator_url).view_api(print_info=False, return_format="dict")
    assert set(console["named_endpoints"]) == {"/operator_overview", "/operator_refresh", "/sample_pairs"}


def test_one_login_serves_both_pages_and_an_annotator_sees_no_console(app: RunningApp) -> None:
    with httpx.Client(base_url=app.url, timeout=30) as anon:
        assert anon.get("/operator", follow_redirects=False).headers["location"] == "/operator/"
        assert "<title>rlhf-loop · operator console</title>" in anon.get("/operator/").text  # its login form
        assert anon.post("/operator/gradio_api/run/operator_overview", json={"data": [], "session_hash": "x"}
                         ).status_code == 401
    alice = http(app, "alice")  # logged in on the labeling page: the console knows her too
    config = alice.get("/operator/config")
    assert config.json()["username"] == "alice" and config.json()["root"].endswith("/operator")
    assert "olga" not in config.text  # the console's build-time values hold no data
    head = next(i for i, fn in app.served.operator.fns.items() if fn.name == "page_head")
    whoami, refusal, body, opened = alice.post("/operator/gradio_api/run/predict", json={
        "fn_index": head, "data": [], "session_hash": "a"}).json()["data"]
    assert "alice" in whoami and "is for operators" in refusal and "Labeling page" in refusal
    assert body["visible"] is False and "value" not in opened  # the name that starts the data events: not set

    with httpx.Client(base_url=app.operator_url, timeout=30) as olga:  # logged in on the console
        assert olga.post("login", data={"username": "olga", "password": PASSWORD}).status_code == 200
        whoami, refusal, body, opened = olga.post("gradio_api/run/predict", json={
            "fn_index": head, "data": [], "session_hash": "o"}).json()["data"]
        assert refusal == "" and body["visible"] is True and opened == "olga"
        assert olga.post(f"{app.url}gradio_api/run/next_pair", json={"data": [], "session_hash": "o"}
                         ).status_code == 200
        assert olga.get(f"{app.url}logout", follow_redirects=False).status_code == 302  # ends it on both pages
        assert olga.post("gradio_api/run/operator_overview", json={"data": [], "session_hash": "o"}
                         ).status_code == 401


def test_handlers_are_introspected_once(app: RunningApp) -> None:
    """Gradio reads each handler's hints on every event: ours are resolved types, not strings to compile."""
    for blocks in (app.served.blocks, app.served.operator):
        handlers = [getattr(f.fn, "__func__", f.fn) for f in blocks.fns.values() if f.fn is not None]
        assert handlers and all("__signature__" in vars(fn) for fn in handlers)
        assert not [fn.__name__ for fn in handlers if any(isinstance(a, str) for a in fn.__annotations__.values())]


def test_a_judgment_needs_the_callers_own_current_serve(app: RunningApp) -> None:
    add_pairs(app.db, [("sample a of 1", "sample b of 1"), ("sample a of 2", "sample b of 2")])
    alice, bob = http(app, "alice"), http(app, "bob")
    alices_token = token_of(run(alice, "next_pair"))
    bobs_token = token_of(run(bob, "next_pair"))
    assert alices_token.split(":")[0] != bobs_token.split(":")[0]

    # Bob replays Alice's token, then forges one for her pair: neither is recorded.
    run(bob, "judge_left", alices_token, None, "")
    run(bob, "judge_left", alices_token.split(":")[0] + ":20000101T000000000000", None, "")
    assert judgment_rows(app.db) == []
    # Alice's own token works once; a replay is answered, not recorded twice.
    first = run(alice, "judge_right", alices_token, "strong", "why not")
    assert any("Saved: B better" in str(v) for v in first.json()["data"])
    run(alice, "judge_right", alices_token, "strong", "why not")
    rows = judgment_rows(app.db)
    alices_pair = alices_token.split(":")[0]
    assert [(r.annotator, str(r.pair_id), r.strength) for r in rows] == [("alice", alices_pair, "strong")]
    assert rows[0].choice == ("b" if rows[0].left_side == "a" else "a")  # B (right) maps through the lease
    # Input the page never sends is refused.
    refused = run(bob, "judge_left", bobs_token, "enormous", "")
    assert refused.status_code == 500 and "enormous" in refused.text
    assert [r.annotator for r in judgment_rows(app.db)] == ["alice"]


def test_logins_and_disabled_accounts(app: RunningApp) -> None:
    with httpx.Client(base_url=app.url) as anon:
        assert anon.post("/login", data={"username": "alice", "password": "wrong-password"}).status_code == 400
        assert anon.post("/login", data={"username": "nobody", "password": PASSWORD}).status_code == 400
        assert anon.post("/gradio_api/run/next_pair", json={"data": [], "session_hash": "x"}).status_code == 401
    alice = http(app, "alice")
    assert run(alice, "next_pair").status_code == 200
    set_active(app.db, "alice", False)  # ends her sessions; this process may trust its cached lookup a few
    refused = run(alice, "next_pair")  # seconds more, but the event re-reads the account
    assert refused.status_code == 401 or (refused.status_code == 500 and "disabled" in refused.text)
    with httpx.Client(base_url=app.url) as again:
        assert again.post("/login", data={"username": "alice", "password": PASSWORD}).status_code == 400


def test_first_serve_creates_an_operator_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ws, _ = init_workspace(tmp_path / "fresh")
    db = ws.database()
    served = serve(ws, db, None, port=free_port(), block=False, quiet=True)
    try:
        out = capsys.readouterr().out
        username = re.search(r"username: (\S+)", out).group(1)
        password = re.search(r"password: (\S+)", out).group(1)
        assert get_annotator(db, username).role == "operator"
        assert authenticate(db, username, password) is not None and len(password) >= 16
        with httpx.Client(base_url=served.url) as session:
            assert session.post("/login", data={"username": username, "password": password}).status_code == 200
    finally:
        served.close()
    again = serve(ws, db, None, port=free_port(), block=False, quiet=True)
    again.close()
    assert "password" not in capsys.readouterr().out
    db.dispose()
