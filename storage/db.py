"""Engine, sessions and schema migrations. The only place that opens connections."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.script.revision import RevisionError
from alembic.util.exc import CommandError
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import OperationalError
from sqlmodel import Session, create_engine

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
SQLITE_BUSY_TIMEOUT_MS = 30_000


class DatabaseError(RuntimeError):
    """A database problem explained for a person (bad URL, server down, schema too new)."""


# What a statement raises when the database went away under it (a server restarting, a dropped connection, SQLite
# still locked after its busy timeout): callers that can wait it out catch this name, not the driver's.
DatabaseUnavailable = OperationalError


def normalize_url(url: str) -> str:
    """Accept `postgresql://` and `postgres://` and route them to psycopg 3."""
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://"):]
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://"):]
    return url


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record) -> None:  # noqa: ANN001
        # pysqlite's own BEGIN handling is replaced by ours (BEGIN IMMEDIATE below).
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn) -> None:  # noqa: ANN001
        # Take the write lock up front: a deferred transaction that later writes can fail
        # with SQLITE_BUSY at once (no busy-timeout wait) when two writers race.
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def connection_error_reason(exc: BaseException) -> str:
    """The part of a driver's connection error a person reads: "Connection refused", "unable to open database
    file", not the driver's paragraph and SQLAlchemy's links."""
    error = getattr(exc, "orig", None) or exc
    first = (str(error).strip().splitlines() or [type(error).__name__])[0]
    return first.rpartition("failed: ")[2].strip() or first


def schema_knows(revision: str) -> bool:
    """Whether this version of rlhf-loop has schema revision `revision` among its migrations."""
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    return _known_revision(ScriptDirectory.from_config(cfg), revision)


def _known_revision(script: ScriptDirectory, revision: str) -> bool:
    try:
        return script.get_revision(revision) is not None
    except (CommandError, RevisionError):  # alembic raises, rather than returning None, for an id it cannot locate
        return False


class Database:
    """A database reached by URL: `sqlite:///path.db` or `postgresql://user@host/db`."""

    def __init__(self, url: str, *, echo: bool = False) -> None:
        self.url = normalize_url(url)
        parsed = make_url(self.url)
        self.is_sqlite = parsed.get_backend_name() == "sqlite"
        if self.is_sqlite:
            if parsed.database and parsed.database != ":memory:":
                try:
                    Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
                except OSError as exc:
                    raise DatabaseError(f"cannot open the SQLite database {parsed.database}: its folder cannot be "
                                        f"created ({exc.strerror}); fix database_url in rlhf.toml or --db") from exc
            self.engine = create_engine(
                self.url, echo=echo, connect_args={"check_same_thread": False, "timeout": 30}
            )
            _configure_sqlite(self.engine)
            # Every SQLite transaction takes the write lock (BEGIN IMMEDIATE), so threads of one
            # process queue here instead: the next one starts the moment the lock is free, where
            # SQLite's busy handler would sleep in steps of up to 100 ms. Other processes (the
            # worker) still meet at SQLite's own lock.
            self._turn = threading.RLock()
        else:
            self.engine = create_engine(self.url, echo=echo, pool_pre_ping=True, pool_size=10, max_overflow=40)
            self._turn = nullcontext()

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A unit of work: commits on success, rolls back on any exception."""
        with self._turn, Session(self.engine, expire_on_commit=False) as session:
            try:
                yield session
                session.commit()
            except BaseException:
                session.rollback()
                raise

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """A Core connection inside one transaction (commit on success, rollback on error): the
        cheaper unit of work of the labeling app's per-event path, which needs no ORM objects."""
        with self._turn, self.engine.begin() as conn:
            yield conn

    def identity(self) -> str:
        """A name for this database that every process opening it agrees on (the SQLite file's
        absolute path; PostgreSQL's host, port and database name), credentials left out."""
        parsed = make_url(self.url)
        if self.is_sqlite:
            return "sqlite:" + (str(Path(parsed.database).resolve()) if parsed.database else ":memory:")
        return f"postgresql://{parsed.host or 'localhost'}:{parsed.port or 5432}/{parsed.database or ''}"

    def wait_until_reachable(self, attempts: int, *, first_wait_s: float = 1.0,
                             on_retry: Callable[[int, float, str], None] | None = None) -> None:
        """Connect, trying up to `attempts` times and waiting 1, 2, 4, ... s (from `first_wait_s`) in between, so a
        database that is still starting is waited for; then DatabaseError, one line saying what to fix.
        `on_retry(attempt, wait_s, reason)` is told before each wait."""
        started, wait = time.monotonic(), first_wait_s
        for attempt in range(1, attempts + 1):
            try:
                with self.engine.connect() as conn:
                    conn.exec_driver_sql("SELECT 1")
                return
            except Exception as exc:  # noqa: BLE001 - every driver raises its own connection errors
                reason = connection_error_reason(exc)
                if attempt == attempts:
                    raise DatabaseError(
                        f"cannot reach the database {self.display_url()} after {attempts} attempt"
                        f"{'s' if attempts > 1 else ''} over {time.monotonic() - started:.0f} s ({reason}): start it, "
                        "or fix database_url in rlhf.toml or --db") from None
                if on_retry is not None:
                    on_retry(attempt, wait, reason)
                time.sleep(wait)
                wait *= 2

    # -- migrations -------------------------------------------------------------------
    def _alembic_config(self) -> AlembicConfig:
        cfg = AlembicConfig()
        cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
        cfg.set_main_option("sqlalchemy.url", self.url.replace("%", "%%"))
        return cfg

    def current_revision(self) -> str | None:
        with self.engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()

    def head_revision(self) -> str | None:
        return ScriptDirectory.from_config(self._alembic_config()).get_current_head()

    def upgrade(self) -> None:
        """Bring the schema to the newest revision; never drops data."""
        try:
            current = self.current_revision()
        except Exception as exc:  # noqa: BLE001 - connection errors come in many types
            raise DatabaseError(f"cannot connect to {self.display_url()}: {connection_error_reason(exc)}") from exc
        script = ScriptDirectory.from_config(self._alembic_config())
        if current is not None and not _known_revision(script, current):
            raise DatabaseError(
                f"database {self.display_url()} is at schema revision {current!r}, which this version of "
                "rlhf-loop does not know; upgrade rlhf-loop"
            )
        if current == script.get_current_head():
            return
        cfg = self._alembic_config()
        if not self.is_sqlite:
            with self.engine.begin() as conn:
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, "head")
            return
        # SQLite alters a column by rebuilding its table (copy, drop, rename); dropping a table that other
        # rows point at fails while foreign keys are enforced, so, as SQLite's documentation prescribes,
        # migrations run with them off (a pragma that only takes effect outside a transaction) and every
        # reference is checked before the transaction commits.
        with self._turn, self.engine.connect() as conn:
            raw = conn.connection.driver_connection  # the sqlite3 connection: no transaction begun for a pragma
            raw.execute("PRAGMA foreign_keys=OFF")
            try:
                with conn.begin():
                    cfg.attributes["connection"] = conn
                    command.upgrade(cfg, "head")
                    broken = conn.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
                    if broken:
                        raise DatabaseError(f"schema upgrade of {self.display_url()} left broken references "
                                            f"({broken[:3]}); nothing was changed")
            finally:
                raw.execute("PRAGMA foreign_keys=ON")

    def display_url(self) -> str:
        return make_url(self.url).render_as_string(hide_password=True)

    def dispose(self) -> None:
        self.engine.dispose()
