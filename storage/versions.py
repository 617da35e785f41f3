"""Policy and reward-model versions."""

from __future__ import annotations

import json
from typing import Any

from sqlmodel import select

from storage.db import Database
from storage.tables import PolicyVersion, RewardModelVersion


def ensure_base_policy(db: Database) -> PolicyVersion:
    """Version 0 is the base model itself; created once per database."""
    with db.session() as s:
        base = s.get(PolicyVersion, 0)
        if base is None:
            base = PolicyVersion(id=0, algorithm="base", round=0)
            s.add(base)
        return base


def current_policy(db: Database) -> PolicyVersion:
    with db.session() as s:
        version = s.exec(select(PolicyVersion).order_by(PolicyVersion.id.desc()).limit(1)).first()
    if version is None:
        return ensure_base_policy(db)
    return version


def get_policy(db: Database, version_id: int) -> PolicyVersion | None:
    with db.session() as s:
        return s.get(PolicyVersion, version_id)


def list_policies(db: Database) -> list[PolicyVersion]:
    with db.session() as s:
        return list(s.exec(select(PolicyVersion).order_by(PolicyVersion.id)))


def add_policy_version(
    db: Database, *, parent_id: int, adapter_path: str, algorithm: str, round: int, metrics: dict[str, Any]
) -> PolicyVersion:
    with db.session() as s:
        version = PolicyVersion(
            parent_id=parent_id, adapter_path=adapter_path, algorithm=algorithm, round=round,
            metrics_json=json.dumps(metrics),
        )
        s.add(version)
        s.flush()
        s.refresh(version)
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
