"""Small read queries for export and simulation that the core read models do not cover."""

from __future__ import annotations

from collections.abc import Iterable

from sqlmodel import select

from storage.db import Database
from storage.tables import Pair


def pair_kinds(db: Database, pair_ids: Iterable[int]) -> dict[int, str]:
    """Each existing pair's kind ("train", "eval_vs_base", ...); unknown ids are left out."""
    ids = sorted(set(pair_ids))
    if not ids:
        return {}
    with db.session() as s:
        return dict(s.exec(select(Pair.id, Pair.kind).where(Pair.id.in_(ids))).all())
