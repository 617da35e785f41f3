"""Read models: judgment rows for training/export, counts for status views, and small lookups (pair kinds)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import case
from sqlalchemy.orm import aliased
from sqlmodel import func, select

from storage.db import Database
from storage.tables import Annotator, Job, Judgment, Pair, PolicyVersion, Prompt, RewardModelVersion, Sample


@dataclass(frozen=True)
class JudgmentRow:
    """One judgment with everything needed to train on it or export it."""

    judgment_id: int
    pair_id: int
    prompt_id: int
    prompt_messages: list[dict[str, str]]
    prompt_split: str
    text_a: str
    text_b: str
    version_a: int | None  # None: a response imported from outside the loop (`system_a` names its writer)
    version_b: int | None
    choice: str
    strength: str | None
    rationale: str | None
    annotator: str
    left_side: str
    round: int
    kind: str
    created_at: datetime
    system_a: str | None = None  # imported responses: the system that wrote them (None for policy samples)
    system_b: str | None = None
    source: str = ""  # the pair's import (`Pair.source`); "" for pairs the loop sampled
    metadata_json: str | None = None  # an imported record's own `metadata`, as JSON
    finish_a: str | None = None  # why sampling ended each response: "eos", "length" (cut), None (unknown)
    finish_b: str | None = None
    annotator_kind: str = "human"  # "human", or "ai" for an AI judge (`rlhf judge`)
    confidence: float | None = None  # an AI judge's confidence in its choice (0 to 1); None for people
    hint_shown: bool = False  # made while the page showed an AI judge's choice (labeling.show_suggestions)


def judgment_rows(
    db: Database, *, round: int | None = None, kinds: tuple[str, ...] = ("train",)
) -> list[JudgmentRow]:
    sa_, sb_ = aliased(Sample), aliased(Sample)
    q = (
        select(Judgment, Pair, Prompt, sa_, sb_, Annotator.username, Annotator.kind)
        .join(Pair, Pair.id == Judgment.pair_id)
        .join(Prompt, Prompt.id == Pair.prompt_id)
        .join(sa_, sa_.id == Pair.sample_a_id)
        .join(sb_, sb_.id == Pair.sample_b_id)
        .join(Annotator, Annotator.id == Judgment.annotator_id)
        .where(Pair.kind.in_(kinds))
        .order_by(Judgment.id)
    )
    if round is not None:
        q = q.where(Pair.round == round)
    with db.session() as s:
        rows = s.exec(q).all()
    return [
        JudgmentRow(
            judgment_id=j.id, pair_id=p.id, prompt_id=pr.id, prompt_messages=json.loads(pr.messages_json),
            prompt_split=pr.split, text_a=a.text, text_b=b.text, version_a=a.policy_version_id,
            version_b=b.policy_version_id, choice=j.choice, strength=j.strength, rationale=j.rationale,
            annotator=name, left_side=j.left_side, round=p.round, kind=p.kind, created_at=j.created_at,
            system_a=a.system, system_b=b.system, source=p.source, metadata_json=p.metadata_json,
            finish_a=a.finish_reason, finish_b=b.finish_reason, annotator_kind=kind, confidence=j.confidence,
            hint_shown=j.hint_shown,
        )
        for j, p, pr, a, b, name, kind in rows
    ]


def status_counts(db: Database) -> dict[str, Any]:
    """The stable machine-readable status (`rlhf status --json`)."""
    with db.session() as s:
        def count(model) -> int:  # noqa: ANN001
            return s.exec(select(func.count()).select_from(model)).one()

        pairs_open = s.exec(
            select(func.count()).select_from(Pair).where(Pair.n_judgments < Pair.judgments_wanted)
        ).one()
        per_annotator = dict(
            s.exec(
                select(Annotator.username, func.count(Judgment.id))
                .join(Judgment, Judgment.annotator_id == Annotator.id)
                .group_by(Annotator.username)
                .order_by(Annotator.username)
            ).all()
        )
        policy = s.exec(select(func.max(PolicyVersion.id))).one()
        reward = s.exec(select(func.max(RewardModelVersion.id))).one()
        running = s.exec(select(Job).where(Job.status == "running").order_by(Job.id)).all()
        queued = s.exec(select(func.count()).select_from(Job).where(Job.status == "queued")).one()
        return {
            "counts": {
                "prompts": count(Prompt), "samples": count(Sample), "pairs": count(Pair),
                "pairs_open": pairs_open, "judgments": count(Judgment),
            },
            "judgments_per_annotator": per_annotator,
            "versions": {"policy": policy or 0, "reward_model": reward},
            "jobs": {
                "running": [{"id": j.id, "kind": j.kind, "progress": j.progress, "message": j.message}
                            for j in running],
                "queued": queued,
            },
        }


def pair_selection_counts(db: Database) -> list[dict[str, Any]]:
    """Training and evaluation pairs per (round, kind, selection method), newest round first.

    Each row: round, kind, selection, pairs, open (still wanting judgments), judgments, and
    mean_info_score (the sampler's informativeness score, 0.0 where the method gives none).
    Control pairs are left out: they belong to no round.
    """
    is_open = case((Pair.n_judgments < Pair.judgments_wanted, 1), else_=0)
    q = (
        select(Pair.round, Pair.kind, Pair.selection, func.count(Pair.id), func.sum(is_open),
               func.sum(Pair.n_judgments), func.avg(Pair.info_score))
        .where(Pair.kind != "control")
        .group_by(Pair.round, Pair.kind, Pair.selection)
        .order_by(Pair.round.desc(), Pair.kind, Pair.selection)
    )
    with db.session() as s:
        rows = s.exec(q).all()
    return [{"round": r, "kind": kind, "selection": selection, "pairs": n, "open": int(n_open or 0),
             "judgments": int(judged or 0), "mean_info_score": float(score or 0.0)}
            for r, kind, selection, n, n_open, judged, score in rows]


def judgments_per_day(db: Database, *, days: int = 30) -> list[dict[str, Any]]:
    """Judgments per (UTC day, annotator) over the last `days` days, oldest first.

    Reads two narrow columns of recent judgments only (the day is taken in Python so that SQLite
    and PostgreSQL agree on UTC whatever the server's time zone).
    """
    from collections import Counter
    from datetime import timedelta

    from storage.tables import utcnow

    since = utcnow() - timedelta(days=days)
    with db.session() as s:
        rows = s.exec(
            select(Annotator.username, Judgment.created_at)
            .join(Annotator, Annotator.id == Judgment.annotator_id)
            .where(Judgment.created_at >= since)
        ).all()
    counts = Counter((created.strftime("%Y-%m-%d"), name) for name, created in rows)
    return [{"day": d, "annotator": a, "judgments": n} for (d, a), n in sorted(counts.items())]


def pair_kinds(db: Database, pair_ids: Iterable[int]) -> dict[int, str]:
    """Each existing pair's kind ("train", "eval_vs_base", ...); unknown ids are left out."""
    ids = sorted(set(pair_ids))
    if not ids:
        return {}
    with db.session() as s:
        return dict(s.exec(select(Pair.id, Pair.kind).where(Pair.id.in_(ids))).all())


def count_judgments(db: Database, *, before: datetime | None = None) -> int:
    """Judgments recorded (before `before`, when given), of every kind."""
    query = select(func.count()).select_from(Judgment)
    if before is not None:
        query = query.where(Judgment.created_at < before)
    with db.session() as s:
        return s.exec(query).one()


def cut_off_counts(db: Database) -> dict[int, tuple[int, int]]:
    """Per policy version: `(cut, known)`, its sampled responses cut at max_new_tokens (finish_reason
    "length") and those whose finish reason is known. A rising share of cut responses is a sign of a
    policy learning that longer is rewarded."""
    known = Sample.finish_reason.is_not(None)
    q = (select(Sample.policy_version_id, func.sum(case((Sample.finish_reason == "length", 1), else_=0)),
                func.count()).where(known, Sample.policy_version_id.is_not(None)).group_by(Sample.policy_version_id))
    with db.session() as s:
        return {version: (int(cut or 0), int(n)) for version, cut, n in s.exec(q).all()}


def version_samples(db: Database, version_id: int, limit: int) -> list[tuple[Prompt, Sample]]:
    """The newest `limit` samples of policy version `version_id` with their prompts (`rlhf rewards check`)."""
    with db.session() as s:
        q = (select(Prompt, Sample).join(Sample, Sample.prompt_id == Prompt.id)
             .where(Sample.policy_version_id == version_id).order_by(Sample.id.desc()).limit(limit))
        return [(prompt, sample) for prompt, sample in s.exec(q)]
