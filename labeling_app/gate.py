"""One operator event at a time per process on SQLite.

Storage itself now queues the threads of a process for SQLite's write lock, one transaction at a
time (`Database.transaction`/`session`), so annotator events take no gate: they hold nothing
while they render. The operator tab still holds this gate around its handlers, which keeps its
multi-query dashboards from interleaving with each other. PostgreSQL: no gate.
"""

from __future__ import annotations

import threading
from types import TracebackType

from storage import Database


class DbGate:
    def __init__(self, db: Database) -> None:
        self._lock = threading.Lock() if db.is_sqlite else None

    def __enter__(self) -> DbGate:
        if self._lock is not None:
            self._lock.acquire()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._lock is not None:
            self._lock.release()
