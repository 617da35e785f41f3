"""Policy and reward-model versions."""

from __future__ import annotations

import json
from typing import Any

from sqlmodel import func, select

from storage.db import Database
from storage.tables import LoopState, PolicyVersion, RewardModelVersion, utcnow


def ensure_base_policy(db: Database) -> PolicyVersion:
    """Version 0 is the base model itself; created once per database."""
    with db.session() as s:
        base = s.get(PolicyVersion, 0)
        if base is None:
            base = PolicyVersion(id=0, algorithm="base", round=0)
            s.add(base)
        return base


CURRENT_POLICY = "current_policy"


def current_policy(db: Database) -> PolicyVersion:
    """The version that is served and that the next round starts from: the one promotion or a rollback made
    current (`set_current_policy`), else the newest."""
    with db.session() as s:
        pointer = s.get(LoopState, CURRENT_POLICY)
        version = s.get(PolicyVersion, int(pointer.value)) if pointer is not None else None
        if version is None:
            version = s.exec(select(PolicyVersion).order_by(PolicyVersion.id.desc()).limit(1)).first()
    if version is None:
        return ensure_base_policy(db)
    return version


def newest_policy(db: Database) -> PolicyVersion:
    """The newest version, current or not."""
    with db.session() as s:
        version = s.exec(select(PolicyVersion).order_by(PolicyVersion.id.desc()).limit(1)).first()
    return version if version is not None else ensure_base_policy(db)


def set_current_policy(db: Database, version_id: int) -> None:
    """Make policy version `version_id` the current one (ValueError if there is none)."""
    with db.session() as s:
        if s.get(PolicyVersion, version_id) is None:
            raise ValueError(f"there is no policy version {version_id}")
        pointer = s.get(LoopState, CURRENT_POLICY) or LoopState(key=CURRENT_POLICY, value="")
        pointer.value, pointer.updated_at = str(version_id), utcnow()
        s.add(pointer)


def next_policy_id(db: Database) -> int:
    """The number the next policy version will get (after a rollback, not the current one's plus one)."""
    return newest_policy(db).id + 1


def get_policy(db: Database, version_id: int) -> PolicyVersion | None:
    with db.session() as s:
        return s.get(PolicyVersion, version_id)


def list_policies(db: Database) -> list[PolicyVersion]:
    with db.session() as s:
        return list(s.exec(select(PolicyVersion).order_by(PolicyVersion.id)))


def add_policy_version(
    db: Database, *, parent_id: int, adapter_path: str, algorithm: str, round: int, metrics: dict[str, Any],
    version_id: int | None = None,
) -> PolicyVersion:
    """Add the next policy version and make it current. It is numbered `version_id` (the number its files were
    published under) or the next free number; never by a sequence, which a rolled-back insert on PostgreSQL
    would leave ahead of the files' numbers."""
    with db.session() as s:
        if version_id is None:
            version_id = (s.exec(select(func.max(PolicyVersion.id))).one() or 0) + 1
        version = PolicyVersion(
            id=version_id, parent_id=parent_id, adapter_path=adapter_path, algorithm=algorithm, round=round,
            metrics_json=json.dumps(metrics),
        )
        s.add(version)
        s.flush()
        s.refresh(version)
        pointer = s.get(LoopState, CURRENT_POLICY) or LoopState(key=CURRENT_POLICY, value="")
        pointer.value, pointer.updated_at = str(version.id), utcnow()
        s.add(pointer)
        return version


def update_policy_metrics(db: Database, version_id: int, metrics: dict[str, Any]) -> None:
    """Merge `metrics` into a version's stored metrics (e.g. a human win rate measured later)."""
    with db.session() as s:
        version = s.get(PolicyVersion, version_id)
        merged = {**json.loads(version.metrics_json), **metrics}
        version.metrics_json = json.dumps(merged)
        s.add(version)


def add_reward_model_version(
    db: Database, *, adapter_path: str, trained_on: int, heldout_accuracy: float | None,
    heldout_loss: float | None, metrics: dict[str, Any],
) -> RewardModelVersion:
    with db.session() as s:
        version = RewardModelVersion(
            adapter_path=adapter_path, trained_on=trained_on, heldout_accuracy=heldout_accuracy,
            heldout_loss=heldout_loss, metrics_json=json.dumps(metrics),
        )
        s.add(version)
        s.flush()
        s.refresh(version)
        return version


def update_reward_model_metrics(db: Database, version_id: int, metrics: dict[str, Any]) -> None:
    """Merge `metrics` into a reward-model version's stored metrics (e.g. the round's policy gate on it)."""
    with db.session() as s:
        version = s.get(RewardModelVersion, version_id)
        version.metrics_json = json.dumps({**json.loads(version.metrics_json), **metrics})
        s.add(version)


def current_reward_model(db: Database) -> RewardModelVersion | None:
    with db.session() as s:
        return s.exec(select(RewardModelVersion).order_by(RewardModelVersion.id.desc()).limit(1)).first()


def list_reward_models(db: Database) -> list[RewardModelVersion]:
    with db.session() as s:
        return list(s.exec(select(RewardModelVersion).order_by(RewardModelVersion.id)))


def get_reward_model(db: Database, version_id: int) -> RewardModelVersion | None:
    with db.session() as s:
        return s.get(RewardModelVersion, version_id)
