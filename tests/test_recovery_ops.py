"""Backup, restore and `rlhf doctor` (issue 41), on SQLite and PostgreSQL: a backup taken while judgments are being
written restores into a workspace that serves (a real HTTP judgment) and trains (a reward-model job); a corrupted
or mismatched archive is refused in one line with nothing written; doctor names each way a workspace can be broken
and exits 1; a version is never half there when a publish dies between its files and its row."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import tarfile
import threading
import time
import uuid
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, text

import storage
from rlhf_core.config import dump_config
from rlhf_core.loop.worker import Worker
from rlhf_core.ops import OpsError
from rlhf_core.ops.backup import take_backup
from rlhf_core.ops.doctor import check_workspace
from rlhf_core.ops.restore import restore_backup
from rlhf_core.service.actor import Actor
from rlhf_core.service.jobs import request_job
from rlhf_core.workspace import Workspace, init_workspace

PASSWORD = "password123"
TOKEN = re.compile(r"\d+:\d{8}T\d+")


@pytest.fixture
def empty_postgres():  # noqa: ANN201
    """A factory of new, empty databases on the test server (dropped afterwards)."""
    base = os.environ.get("RLHF_TEST_PG_URL")
    made: list[str] = []
    admin = create_engine(storage.normalize_url(base), isolation_level="AUTOCOMMIT") if base else None

    def make() -> str:
        name = f"rlhf_restore_{uuid.uuid4().hex[:10]}"
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        made.append(name)
        return f"{base.rpartition('/')[0]}/{name}"

    yield make
    if admin is not None:
        with admin.connect() as conn:
            for name in made:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def trained_workspace(db: storage.Database, root: Path, tiny_model_dir: Path, judged_pairs) -> Workspace:  # noqa: ANN001
    """A workspace on `db` (rlhf.toml points at it) with judgments and one reward-model version."""
    ws, _ = init_workspace(root, model=str(tiny_model_dir), db_url=db.url)
    ws.config.reward.epochs, ws.config.reward.max_length = 1, 48
    ws.config_path.write_text(dump_config(ws.config))
    judged_pairs(db, 8, {"ann": True})
    job = request_job(ws, db, "train_rm", {}, Actor.shell())
    assert Worker(ws, db, poll_seconds=0.05).run_until_done(job.id, timeout=600).status == "done"
    return ws


def judge_over_http(ws: Workspace, db: storage.Database) -> str:
    """Serve the workspace's labeling page and make one judgment through it as an annotator would."""
    from labeling_app import serve

    storage.create_annotator(db, f"rita{uuid.uuid4().hex[:4]}", PASSWORD)
    name = storage.list_annotators(db)[-1].username
    served = serve(ws, db, port=_free_port(), block=False, quiet=True)
    try:
        with httpx.Client(base_url=served.url, timeout=60) as session:
            assert session.post("/login", data={"username": name, "password": PASSWORD}).status_code == 200
            fetched = session.post("/gradio_api/run/next_pair", json={"data": [], "session_hash": "r"}).json()
            token = next(v for v in fetched["data"] if isinstance(v, str) and TOKEN.fullmatch(v))
            saved = session.post("/gradio_api/run/judge_left", json={"data": [token, None, ""], "session_hash": "r"})
            return next(v for v in saved.json()["data"] if isinstance(v, str) and v.startswith("Saved"))
    finally:
        served.close()


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def open_questions(db: storage.Database, n: int) -> None:
    """`n` open pairs of their own prompts (k = 1), for a writer to judge."""
    storage.add_prompts(db, [[{"role": "user", "content": f"open question {i}"}] for i in range(n)])
    for prompt in storage.list_prompts(db)[-n:]:
        storage.record_generations(db, prompt_id=prompt.id, policy_version_id=0, responses=[("yes", 1), ("no", 1)],
                                   gen_params={}, pairs=[(0, 1)])


def test_backup_while_writing_then_restore_serves_and_trains(db, tmp_path, tiny_model_dir, judged_pairs,
                                                             empty_postgres) -> None:
    ws = trained_workspace(db, tmp_path / "ws", tiny_model_dir, judged_pairs)
    open_questions(db, 150)
    writer = storage.create_annotator(db, "writer", PASSWORD)
    acknowledged: list[int] = []
    stop = threading.Event()

    def write() -> None:  # an annotator judging as fast as the database takes it; an id is kept once committed
        while not stop.is_set() and (served := storage.next_pair_for(db, writer.id)) is not None:
            storage.record_judgment(db, pair_id=served.pair_id, annotator_id=writer.id, choice="a")
            acknowledged.append(served.pair_id)

    thread = threading.Thread(target=write)
    thread.start()
    while len(acknowledged) < 10:
        time.sleep(0.01)
    before = set(acknowledged)
    done = take_backup(ws, db, tmp_path / "backup.tar.gz")
    during = len(acknowledged)
    stop.set()
    thread.join()
    assert during > len(before), "the writer stopped while the backup ran"
    assert done.reward_versions == 1 and done.database == ("sqlite" if db.is_sqlite else "postgresql")

    restored = restore_backup(done.path, tmp_path / "restored", None if db.is_sqlite else empty_postgres())
    rdb = restored.workspace.database()
    try:
        mine = {r.pair_id for r in storage.judgment_rows(rdb, kinds=("train",)) if r.annotator == "writer"}
        assert before <= mine <= set(acknowledged)  # every judgment acknowledged before the backup, none invented
        assert all(f.ok for f in check_workspace(restored.workspace, rdb)), check_workspace(restored.workspace, rdb)
        (rm,) = storage.list_reward_models(rdb)
        assert rm.adapter_path.startswith(str(restored.workspace.root))  # the rows point at the restored files
        assert judge_over_http(restored.workspace, rdb).startswith("Saved")  # it serves
        job = request_job(restored.workspace, rdb, "train_rm", {}, Actor.shell())  # and trains
        assert Worker(restored.workspace, rdb, poll_seconds=0.05).run_until_done(job.id, timeout=600).status == "done"
        assert len(storage.list_reward_models(rdb)) == 2
    finally:
        rdb.dispose()
    assert len(storage.list_reward_models(db)) == 1  # the original is untouched


def rewritten(archive: Path, out: Path, change) -> Path:  # noqa: ANN001
    """A copy of `archive` with each member's bytes passed through `change(name, data) -> data | None` (None:
    left out)."""
    with tarfile.open(archive) as src, tarfile.open(out, "w") as dst:
        for member in src:
            data = src.extractfile(member).read() if member.isfile() else None
            data = change(member.name, data) if data is not None else None
            if member.isfile() and data is None:
                continue
            member.size = len(data or b"")
            dst.addfile(member, io.BytesIO(data) if data is not None else None)
    return out


def refused(archive: Path, target: Path, db_url: str | None, match: str) -> None:
    scratch_before = {p.name for p in Path(os.environ.get("TMPDIR", "/tmp")).glob("rlhf-restore-*")}
    with pytest.raises(OpsError, match=match):
        restore_backup(archive, target, db_url)
    assert not target.exists(), f"{target} was written"
    assert {p.name for p in Path(os.environ.get("TMPDIR", "/tmp")).glob("rlhf-restore-*")} <= scratch_before


def test_a_corrupted_or_mismatched_archive_is_refused_with_nothing_written(db, tmp_path, tiny_model_dir, judged_pairs,
                                                                         empty_postgres) -> None:
    ws = trained_workspace(db, tmp_path / "ws", tiny_model_dir, judged_pairs)
    good = take_backup(ws, db, tmp_path / "good.tar").path
    target = tmp_path / "new"

    def flip_adapter(name: str, data: bytes) -> bytes:
        return data[:-10] + bytes([data[-10] ^ 1]) + data[-9:] if name.endswith("adapter.safetensors") else data

    refused(rewritten(good, tmp_path / "flipped.tar", flip_adapter), target, None if db.is_sqlite else
            empty_postgres(), "corrupted: workspace/adapters/reward-v0001/adapter.safetensors does not match")
    refused(rewritten(good, tmp_path / "less.tar", lambda n, d: None if n.endswith("rlhf.toml") else d), target,
            None, "corrupted: workspace/rlhf.toml is missing")
    (tmp_path / "short.tar").write_bytes(good.read_bytes()[:50_000])
    refused(tmp_path / "short.tar", target, None, "cannot be read|corrupted")
    (tmp_path / "notes.tar").write_text("these are not the droids\n")
    refused(tmp_path / "notes.tar", target, None, "cannot be read as a tar archive")

    def manifest(**changes):  # noqa: ANN202
        def change(name: str, data: bytes) -> bytes:
            if not name.endswith("manifest.json"):
                return data
            m = json.loads(data)
            for key, value in changes.items():
                m[key] = {**m[key], **value} if isinstance(value, dict) else value
            return json.dumps(m).encode()
        return change

    refused(rewritten(good, tmp_path / "future.tar", manifest(database={"revision": "0099_from_the_future"})), target,
            None, "schema revision '0099_from_the_future', which this rlhf-loop does not know")
    refused(rewritten(good, tmp_path / "v9.tar", manifest(format_version=9)), target, None,
            "backup format version 9")
    if db.is_sqlite:
        refused(good, target, "postgresql://rlhf@127.0.0.1:1/x", "holds a SQLite database")
    else:
        refused(good, target, None, "holds a PostgreSQL database: give --db")
        refused(good, target, db.url, "is not empty: create a new one")
    target.mkdir()
    (target / "keep.txt").write_text("mine")
    with pytest.raises(OpsError, match="is not empty: restore into a new or empty directory"):
        restore_backup(good, target, None)
    assert [p.name for p in target.iterdir()] == ["keep.txt"]
    cli = subprocess.run([sys.executable, "-m", "rlhf_core", "restore", str(tmp_path / "notes.tar"), "--workspace",
                          str(tmp_path / "cli")], capture_output=True, text=True, timeout=120)
    assert cli.returncode == 1 and cli.stdout == "" and len(cli.stderr.strip().splitlines()) == 1, cli.stderr
    assert cli.stderr.startswith("error: ") and not (tmp_path / "cli").exists()


def doctor(ws: Workspace, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rlhf_core", "doctor", "--workspace", str(ws.root), *extra],
                          capture_output=True, text=True, timeout=120)


def test_doctor_names_each_problem_of_a_broken_workspace_and_exits_1(db, tmp_path, tiny_model_dir, judged_pairs
                                                                     ) -> None:
    ws = trained_workspace(db, tmp_path / "ws", tiny_model_dir, judged_pairs)
    healthy = doctor(ws)
    assert healthy.returncode == 0 and "The workspace is whole." in healthy.stdout, healthy.stdout
    (rm,) = storage.list_reward_models(db)
    files = Path(rm.adapter_path)
    files.rename(ws.adapters_dir / "kept-aside")  # the row's files are gone
    stray = ws.adapters_dir / "policy-v0007"  # files without a row, as a publish that died before its row leaves
    stray.mkdir()
    (stray / "adapter.safetensors").write_bytes(b"x")
    half = ws.adapters_dir / ".tmp-policy-v0008-abcd1234"  # a publish that died while writing
    half.mkdir()
    (half / "adapter.safetensors.tmp").write_bytes(b"x")
    hour_ago = time.time() - 3600
    for path in (stray, half):
        os.utime(path, (hour_ago, hour_ago))
    with db.transaction() as conn:  # the schema one migration behind
        conn.execute(text("UPDATE alembic_version SET version_num = '0009_current_policy'"))
    ws.config.recovery.min_free_disk_mb = 10**9  # more than any disk has
    ws.config_path.write_text(dump_config(ws.config))

    broken = doctor(ws)
    assert broken.returncode == 1 and "5 problems found." in broken.stderr, broken.stdout + broken.stderr
    lines = [line for line in broken.stdout.splitlines() if line.startswith("FAIL")]
    assert any("schema is at '0009_current_policy', this rlhf-loop expects '0013_job_recovery'" in x for x in lines)
    assert any(f"reward v{rm.id}: its files are missing" in x and "rlhf restore" in x for x in lines)
    assert any("adapters/policy-v0007 has no version row" in x and "rlhf doctor --fix" in x for x in lines)
    assert any("adapters/.tmp-policy-v0008-abcd1234 left by a publish that died while writing" in x for x in lines)
    assert any("MiB free on the workspace's filesystem (recovery.min_free_disk_mb" in x for x in lines)

    fixed = doctor(ws, "--fix")
    assert not stray.exists() and not half.exists() and fixed.returncode == 1  # the rest is for a person
    (ws.adapters_dir / "kept-aside").rename(files)
    with db.transaction() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '0013_job_recovery'"))
    ws.config.recovery.min_free_disk_mb = 1
    ws.config_path.write_text(dump_config(ws.config))
    assert doctor(ws).returncode == 0


def test_down_database_is_named_by_doctor(tmp_path) -> None:
    ws, _ = init_workspace(tmp_path / "ws")
    ws.config.database_url = "postgresql://rlhf@127.0.0.1:1/nothing_here"
    ws.config_path.write_text(dump_config(ws.config))
    out = doctor(ws)
    first = out.stdout.splitlines()[0]
    assert out.returncode == 1 and first.startswith("FAIL  database ") and "does not answer" in first, out.stdout
    assert "rlhf@127.0.0.1:1/nothing_here" in first and "start it" in first


CRASH = """
import os, sys
from pathlib import Path
import rlhf_core.training.publish as publish
import rlhf_core.training.reward_service as service
from rlhf_core.training.workspace_stack import load_stack
from rlhf_core.workspace import open_workspace
where = sys.argv[2]
if where == "row":  # killed between the files' rename and the row
    service.add_reward_model_version = lambda *a, **k: os._exit(9)
else:  # killed while the files are written
    publish._fsync_tree = lambda directory: os._exit(9)
ws = open_workspace(sys.argv[1])
service.run_reward_training(ws, ws.database(), load_stack(ws), progress=False)
"""


@pytest.mark.parametrize("where", ["files", "row"])
def test_a_crash_between_files_and_row_leaves_no_half_version(db, tmp_path, tiny_model_dir, judged_pairs,
                                                              where: str) -> None:
    ws, _ = init_workspace(tmp_path / "ws", model=str(tiny_model_dir), db_url=db.url)
    ws.config.reward.epochs, ws.config.reward.max_length = 1, 48
    ws.config_path.write_text(dump_config(ws.config))
    judged_pairs(db, 8, {"ann": True})
    crash = subprocess.run([sys.executable, "-c", CRASH, str(ws.root), where], capture_output=True, text=True,
                           timeout=300)
    assert crash.returncode == 9, crash.stderr[-3000:]
    assert storage.list_reward_models(db) == []  # no row: the version does not exist
    final = ws.adapters_dir / "reward-v0001"
    left = sorted(p.name for p in ws.adapters_dir.iterdir())
    if where == "files":  # only a temporary folder: nothing at the version's own path
        assert len(left) == 1 and left[0].startswith(".tmp-reward-v0001-") and not final.exists()
    else:  # complete files at the version's path, with no row: doctor names them
        assert left == ["reward-v0001"] and (final / "adapter.safetensors").stat().st_size > 1000
        os.utime(final, (time.time() - 3600,) * 2)
        assert any("adapters/reward-v0001 has no version row" in f.what for f in check_workspace(ws, db))
    # The next training publishes that number over what the crash left; then the workspace is whole.
    job = request_job(ws, db, "train_rm", {}, Actor.shell())
    assert Worker(ws, db, poll_seconds=0.05).run_until_done(job.id, timeout=600).status == "done"
    (rm,) = storage.list_reward_models(db)
    assert rm.adapter_path == str(final)
    findings = check_workspace(ws, db, fix=True)
    assert all(f.ok for f in findings), findings
    assert sorted(p.name for p in ws.adapters_dir.iterdir()) == ["reward-v0001"]


def test_a_failed_row_insert_removes_the_published_files(tmp_path, monkeypatch) -> None:
    from rlhf_core.training.publish import publish_version

    final = tmp_path / "adapters" / "policy-v0003"

    def record() -> None:
        raise storage.DatabaseError("the database went away")

    with pytest.raises(storage.DatabaseError):
        publish_version(final, lambda d: (d / "adapter.safetensors").write_bytes(b"w" * 100), record, "policy v3")
    assert list((tmp_path / "adapters").iterdir()) == []
