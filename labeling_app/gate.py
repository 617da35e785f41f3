"""One database user at a time per process on SQLite.

Storage begins every SQLite transaction with BEGIN IMMEDIATE (the write lock), so concurrent
handlers race for that lock, and SQLite's busy handler makes the losers sleep in steps of up to
100 ms. Waiting on an in-process lock instead hands the database over the moment it is free
(measured by bench/labeling_load.py). PostgreSQL handles concurrency itself: no gate.
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
