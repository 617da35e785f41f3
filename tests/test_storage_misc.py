"""Users, prompts, migrations, read models and engine settings of the `storage` package.

Tests taking `db` run on SQLite and on PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from sqlmodel import func, select

from rlhf_core.workspace import init_workspace
from storage import (
    Annotator,
    Database,
    DatabaseError,
    Job,
    Prompt,
    Sample,
    UserError,
    add_policy_version,
    add_prompts,
    add_reward_model_version,
    authenticate,
    check_password,
    count_prompts,
    create_annotator,
    judgment_rows,
    list_prompts,
    next_pair_for,
    prompt_messages,
    record_generations,
    record_judgment,
    set_active,
    status_counts,
)


def conv(content: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": content}]


def prompt_id(db: Database, content: str) -> int:
    add_prompts(db, [conv(content)])
    return next(p.id for p in list_prompts(db) if prompt_messages(p) == conv(content))


def sample_count(db: Database) -> int:
    with db.session() as s:
        return s.exec(select(func.count()).select_from(Sample)).one()


# -- users ---------------------------------------------------------------------------------------


def test_password_is_stored_as_salted_scrypt_hash(db):
    alice = create_annotator(db, "alice", "correct horse")
    bob = create_annotator(db, "bob", "correct horse")
    for user in (alice, bob):
        assert user.password_hash.startswith("scrypt$")
        assert "correct horse" not in user.password_hash
        assert check_password("correct horse", user.password_hash)
    assert alice.password_hash != bob.password_hash  # per-user salt
    with db.session() as s:
        stored = s.exec(select(Annotator.password_hash).where(Annotator.username == "alice")).one()
    assert stored == alice.password_hash


def test_authenticate(db):
    create_annotator(db, "alice", "correct horse", role="operator")
    user = authenticate(db, " alice ", "correct horse")
    assert user is not None and user.username == "alice" and user.role == "operator"
    assert authenticate(db, "alice", "wrong horse") is None
    assert authenticate(db, "mallory", "correct horse") is None
    set_active(db, "alice", False)
    assert authenticate(db, "alice", "correct horse") is None
    set_active(db, "alice", True)
    assert authenticate(db, "alice", "correct horse") is not None


def test_create_annotator_refusals(db):
    create_annotator(db, "alice", "correct horse")
    with pytest.raises(UserError, match="already exists"):
        create_annotator(db, "alice", "another password")
    with pytest.raises(UserError, match="already exists"):
        create_annotator(db, "  alice  ", "another password")
    with pytest.raises(UserError, match="role"):
        create_annotator(db, "bob", "correct horse", role="admin")
    with pytest.raises(UserError, match="8 characters"):
        create_annotator(db, "bob", "short")
    with db.session() as s:
        assert s.exec(select(Annotator.username)).all() == ["alice"]


# -- prompts -------------------------------------------------------------------------------------


def test_add_prompts_deduplicates_within_batch_and_against_stored(db):
    first = add_prompts(db, [conv("x"), conv("y"), conv("x")], source="file.jsonl")
    assert (first.added, first.duplicates) == (2, 1)
    second = add_prompts(db, [conv("y"), conv("z"), conv("z"), conv("x")], split="eval")
    assert (second.added, second.duplicates) == (1, 3)
    assert count_prompts(db) == 3
    assert count_prompts(db, split="eval") == 1
    assert [prompt_messages(p) for p in list_prompts(db)] == [conv("x"), conv("y"), conv("z")]
    assert list_prompts(db)[0].source == "file.jsonl"


def test_add_prompts_rejects_unknown_split(db):
    with pytest.raises(ValueError, match="split"):
        add_prompts(db, [conv("x")], split="test")
    assert count_prompts(db) == 0


# -- migrations ----------------------------------------------------------------------------------


def test_upgrade_from_empty_reaches_head_and_is_idempotent(tmp_path: Path):
    database = Database(f"sqlite:///{tmp_path / 'fresh.db'}")
    try:
        assert database.current_revision() is None
        database.upgrade()
        assert database.current_revision() == database.head_revision() is not None
        create_annotator(database, "alice", "correct horse")
        database.upgrade()
        assert database.current_revision() == database.head_revision()
        assert authenticate(database, "alice", "correct horse") is not None
    finally:
        database.dispose()


def test_upgrade_again_keeps_rows(db):
    assert db.current_revision() == db.head_revision()
    add_prompts(db, [conv("keep me")])
    db.upgrade()
    assert db.current_revision() == db.head_revision()
    assert [prompt_messages(p) for p in list_prompts(db)] == [conv("keep me")]


def test_unknown_revision_is_refused_with_a_clear_error(db):
    with db.engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = 'zzzz'"))
    with pytest.raises(DatabaseError, match="zzzz"):
        db.upgrade()


def test_unknown_revision_on_a_hand_made_sqlite_file(tmp_path: Path):
    database = Database(f"sqlite:///{tmp_path / 'future.db'}")
    try:
        with database.engine.begin() as conn:
            conn.execute(text("CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL PRIMARY KEY)"))
            conn.execute(text("INSERT INTO alembic_version VALUES ('zzzz')"))
        with pytest.raises(DatabaseError, match="'zzzz'"):
            database.upgrade()
    finally:
        database.dispose()


def test_init_workspace_twice_keeps_data(tmp_path: Path):
    ws, created = init_workspace(tmp_path / "ws")
    assert created and ws.config_path.is_file()
    db = ws.database()
    try:
        create_annotator(db, "alice", "correct horse")
        add_prompts(db, [conv("survives")])
    finally:
        db.dispose()
    ws2, created2 = init_workspace(tmp_path / "ws")
    assert created2 is False
    db = ws2.database()
    try:
        assert db.current_revision() == db.head_revision()
        assert authenticate(db, "alice", "correct horse") is not None
        assert [prompt_messages(p) for p in list_prompts(db)] == [conv("survives")]
    finally:
        db.dispose()


# -- read models and generations -----------------------------------------------------------------


def test_status_counts_shape_and_values(db):
    empty = status_counts(db)
    assert set(empty) == {"counts", "judgments_per_annotator", "versions", "jobs"}
    assert set(empty["counts"]) == {"prompts", "samples", "pairs", "pairs_open", "judgments"}
    assert set(empty["versions"]) == {"policy", "reward_model"}
    assert set(empty["jobs"]) == {"running", "queued"}
    assert empty["counts"] == dict.fromkeys(empty["counts"], 0)
    assert empty["versions"] == {"policy": 0, "reward_model": None}
    assert empty["jobs"] == {"running": [], "queued": 0} and empty["judgments_per_annotator"] == {}

    add_prompts(db, [conv("p1"), conv("p2")])
    pairs = record_generations(db, prompt_id=prompt_id(db, "p1"), policy_version_id=0,
                               responses=[("r0", 1), ("r1", 1), ("r2", 1)], gen_params={"t": 1.0},
                               pairs=[(0, 1), (1, 2)])
    alice = create_annotator(db, "alice", "correct horse")
    served = next_pair_for(db, alice.id)
    record_judgment(db, pair_id=served.pair_id, annotator_id=alice.id, choice="a")
    policy = add_policy_version(db, parent_id=0, adapter_path="adapters/p1", algorithm="grpo", round=1, metrics={})
    reward = add_reward_model_version(db, adapter_path="adapters/rm1", trained_on=1, heldout_accuracy=None,
                                      heldout_loss=None, metrics={})
    with db.session() as s:
        running = Job(kind="train_reward", status="running", progress=0.5, message="step 3")
        s.add_all([running, Job(kind="generate"), Job(kind="generate"), Job(kind="old", status="done")])
    status = status_counts(db)
    assert status["counts"] == {"prompts": 2, "samples": 3, "pairs": len(pairs), "pairs_open": 1, "judgments": 1}
    assert status["judgments_per_annotator"] == {"alice": 1}
    assert status["versions"] == {"policy": policy.id, "reward_model": reward.id}
    assert status["jobs"] == {
        "running": [{"id": running.id, "kind": "train_reward", "progress": 0.5, "message": "step 3"}],
        "queued": 2,
    }


def test_judgment_rows(db):
    p1, p2 = prompt_id(db, "first"), prompt_id(db, "second")
    (train_pair,) = record_generations(db, prompt_id=p1, policy_version_id=0, responses=[("a1", 2), ("b1", 2)],
                                       gen_params={}, pairs=[(0, 1)], round=3, judgments_wanted=2)
    (eval_pair,) = record_generations(db, prompt_id=p2, policy_version_id=0, responses=[("a2", 2), ("b2", 2)],
                                      gen_params={}, pairs=[(1, 0)], kind="eval_vs_base")
    alice = create_annotator(db, "alice", "correct horse")
    bob = create_annotator(db, "bob", "correct horse")
    record_judgment(db, pair_id=train_pair.id, annotator_id=alice.id, choice="b", strength="strong",
                    rationale="b is right", require_served=False)
    record_judgment(db, pair_id=train_pair.id, annotator_id=bob.id, choice="tie", require_served=False)
    record_judgment(db, pair_id=eval_pair.id, annotator_id=bob.id, choice="a", require_served=False)

    rows = judgment_rows(db)
    assert [(r.annotator, r.choice, r.strength, r.rationale) for r in rows] == [
        ("alice", "b", "strong", "b is right"), ("bob", "tie", None, None)]
    assert all((r.text_a, r.text_b, r.prompt_messages, r.round) == ("a1", "b1", conv("first"), 3) for r in rows)
    assert judgment_rows(db, round=0) == []
    (row,) = judgment_rows(db, kinds=("eval_vs_base",))
    assert (row.text_a, row.text_b, row.annotator, row.kind) == ("b2", "a2", "bob", "eval_vs_base")


def test_record_generations_is_atomic(db):
    pid = prompt_id(db, "q")
    with pytest.raises(IndexError):
        record_generations(db, prompt_id=pid, policy_version_id=0, responses=[("r0", 1), ("r1", 1)],
                           gen_params={}, pairs=[(0, 1), (0, 5)])
    assert sample_count(db) == 0
    assert status_counts(db)["counts"]["pairs"] == 0


def test_foreign_keys_are_enforced(db):
    with pytest.raises(IntegrityError):
        with db.session() as s:
            s.add(Sample(prompt_id=12345, policy_version_id=0, text="orphan"))
    assert sample_count(db) == 0


# -- SQLite engine settings ----------------------------------------------------------------------


def test_sqlite_pragmas(sqlite_db):
    with sqlite_db.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30_000


def test_prompt_table_has_unique_content_hash(db):
    add_prompts(db, [conv("x")])
    (stored,) = list_prompts(db)
    with pytest.raises(IntegrityError):
        with db.session() as s:
            s.add(Prompt(messages_json=stored.messages_json, content_hash=stored.content_hash))


def test_an_older_schema_upgrades_without_losing_data(tmp_path) -> None:
    """A workspace made by an earlier release (schema 0001) upgrades in place and keeps its rows."""
    from alembic import command

    import storage

    db = storage.Database(f"sqlite:///{tmp_path / 'old.db'}")
    cfg = db._alembic_config()
    with db.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0001")
    assert db.current_revision() == "0001"
    storage.ensure_base_policy(db)
    with db.engine.begin() as conn:  # as that release wrote them (today's Annotator and Prompt have columns 0001 lacks)
        conn.exec_driver_sql("INSERT INTO annotator (username, password_hash, role, active, created_at) VALUES "
                             f"('early', '{storage.hash_password('password123')}', 'annotator', 1, '2026-01-01')")
        conn.exec_driver_sql("INSERT INTO prompt (messages_json, content_hash, source, split, created_at) VALUES "
                             "('[{\"role\": \"user\", \"content\": \"kept\"}]', 'h', '', 'train', '2026-01-01')")
    db.upgrade()
    assert db.current_revision() == db.head_revision() != "0001"
    assert storage.get_annotator(db, "early").kind == "human"  # a person, as every account before judges
    assert storage.authenticate(db, "early", "password123") is not None
    assert storage.count_prompts(db) == 1
    assert storage.prompt_columns(storage.list_prompts(db)[0]) == {}  # 0011 gives old prompts no columns
    with db.engine.connect() as conn:
        indexes = {row[1] for row in conn.exec_driver_sql("PRAGMA index_list('pair')")}
    assert "ix_pair_open_priority" in indexes


def test_migrations_match_the_table_definitions(db) -> None:
    """Every change to storage/tables.py comes with a migration (nothing left for autogenerate)."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext
    from sqlmodel import SQLModel

    with db.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), SQLModel.metadata)
    assert diff == []


def test_the_outside_data_migration_rebuilds_samples_and_keeps_every_reference(tmp_path) -> None:
    """0008 makes sample.policy_version_id nullable (imported responses have no version): on SQLite the
    sample table is rebuilt under judged pairs that point at it; rows, references and the foreign-key
    check survive."""
    from alembic import command

    import storage

    db = storage.Database(f"sqlite:///{tmp_path / 'old.db'}")
    cfg = db._alembic_config()
    with db.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0007_serve_newest")
        for sql in [
            "INSERT INTO policyversion (id, algorithm, round, metrics_json, created_at) VALUES (0, 'base', 0, '{}', "
            "'2026-01-01')",
            "INSERT INTO annotator (id, username, password_hash, role, active, created_at) VALUES (1, 'early', 'x', "
            "'annotator', 1, '2026-01-01')",
            "INSERT INTO prompt (id, messages_json, content_hash, source, split, created_at) VALUES "
            "(1, '[{\"role\": \"user\", \"content\": \"kept\"}]', 'h', '', 'train', '2026-01-01')",
            "INSERT INTO sample (id, prompt_id, policy_version_id, text, token_count, gen_params_json, created_at) "
            "VALUES (1, 1, 0, 'one', 1, '{}', '2026-01-01'), (2, 1, 0, 'two', 1, '{}', '2026-01-01')",
            "INSERT INTO pair (id, prompt_id, sample_a_id, sample_b_id, round, kind, judgments_wanted, n_judgments, "
            "priority, selection, info_score, created_at) VALUES (1, 1, 1, 2, 0, 'train', 1, 1, 0, 'all', 0, "
            "'2026-01-01')",
            "INSERT INTO judgment (id, pair_id, annotator_id, choice, left_side, created_at) VALUES "
            "(1, 1, 1, 'a', 'a', '2026-01-01')",
        ]:
            conn.exec_driver_sql(sql)
    db.upgrade()
    try:
        assert db.current_revision() == db.head_revision()
        (row,) = storage.judgment_rows(db)
        assert (row.text_a, row.text_b, row.choice, row.version_a) == ("one", "two", "a", 0)
        with db.session() as s:
            assert s.get(storage.Pair, 1).source == ""
            s.add(storage.Sample(prompt_id=1, text="imported", system="gpt-x"))  # no policy version
        with pytest.raises(IntegrityError):  # references are enforced again after the migration
            with db.session() as s:
                s.add(storage.Sample(prompt_id=999, policy_version_id=0, text="orphan"))
    finally:
        db.dispose()
