"""Samples, pairs, serving pairs to annotators and recording their judgments."""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, delete, func, select

from storage.controls import next_control_pair
from storage.db import Database
from storage.tables import (
    CHOICES,
    PAIR_SELECTIONS,
    STRENGTHS,
    Annotator,
    Judgment,
    Lease,
    Pair,
    Prompt,
    Sample,
    Skip,
    utcnow,
)

MAX_RATIONALE_CHARS = 5000


class JudgmentError(ValueError):
    """A judgment refused for a reason the annotator (or the API caller) can act on."""


@dataclass(frozen=True)
class ServedPair:
    """A pair as one annotator sees it: sides already assigned to left and right."""

    pair_id: int
    prompt_messages: list[dict[str, str]]
    left_text: str
    right_text: str
    left_side: str  # which sample ("a" or "b") is shown on the left
    expires_at: datetime


SCREEN_PICKS = ("left", "right", "tie", "both_bad")


def choice_from_screen(pick: str, left_side: str) -> str:
    """The pair's own choice (a/b/tie/both_bad) for what was picked on screen.

    `pick` is "left", "right", "tie" or "both_bad"; `left_side` is the sample ("a" or "b") the
    server showed on the left. The annotator page and the simulated annotators both use this.

    >>> choice_from_screen("left", "b"), choice_from_screen("right", "b"), choice_from_screen("tie", "b")
    ('b', 'a', 'tie')
    """
    if left_side not in ("a", "b"):
        raise JudgmentError(f"left_side must be 'a' or 'b', not {left_side!r}")
    if pick == "left":
        return left_side
    if pick == "right":
        return "b" if left_side == "a" else "a"
    if pick in ("tie", "both_bad"):
        return pick
    raise JudgmentError(f"pick must be one of {', '.join(SCREEN_PICKS)}, not {pick!r}")


def record_generations(
    db: Database, *, prompt_id: int, policy_version_id: int, responses: list[tuple[str, int]],
    gen_params: dict[str, Any], pairs: list[tuple[int, int]], round: int = 0, judgments_wanted: int = 1,
    priority: int = 0, kind: str = "train", info_scores: list[float] | None = None, selection: str = "all",
) -> list[Pair]:
    """Store one prompt's sampled responses `(text, token_count)` and the pairs between them
    (`pairs` holds indices into `responses`), atomically.

    selection: the method that chose these pairs (`PAIR_SELECTIONS`). info_scores: one per pair, how
    informative the sampler judged it (higher is served first among pairs of equal priority);
    None stores 0.0 for each.
    """
    _check_selection(selection)
    scores = _checked_scores(info_scores, len(pairs))
    with db.session() as s:
        samples = [
            Sample(prompt_id=prompt_id, policy_version_id=policy_version_id, text=text, token_count=n,
                   gen_params_json=json.dumps(gen_params))
            for text, n in responses
        ]
        s.add_all(samples)
        s.flush()
        rows = [
            Pair(prompt_id=prompt_id, sample_a_id=samples[i].id, sample_b_id=samples[j].id, round=round,
                 judgments_wanted=judgments_wanted, priority=priority, kind=kind, selection=selection,
                 info_score=score)
            for (i, j), score in zip(pairs, scores, strict=True)
        ]
        s.add_all(rows)
        s.flush()
        return rows


def _check_selection(selection: str) -> None:
    if selection not in PAIR_SELECTIONS:
        raise ValueError(f"selection must be one of {', '.join(PAIR_SELECTIONS)}, not {selection!r}")


def _checked_scores(info_scores: list[float] | None, n_pairs: int) -> list[float]:
    if info_scores is None:
        return [0.0] * n_pairs
    if len(info_scores) != n_pairs:
        raise ValueError(f"{len(info_scores)} info_scores for {n_pairs} pairs; give one per pair")
    scores = [float(x) for x in info_scores]
    if not all(math.isfinite(x) for x in scores):
        raise ValueError("info_scores must be finite numbers")
    return scores


def add_samples(db: Database, *, prompt_id: int, policy_version_id: int, responses: list[tuple[str, int]],
                gen_params: dict[str, Any]) -> list[int]:
    """Store responses `(text, token_count)` without pairing them; returns their ids in order."""
    with db.session() as s:
        samples = [Sample(prompt_id=prompt_id, policy_version_id=policy_version_id, text=text, token_count=n,
                          gen_params_json=json.dumps(gen_params)) for text, n in responses]
        s.add_all(samples)
        s.flush()
        return [sample.id for sample in samples]


def add_pair_between(
    db: Database, *, prompt_id: int, sample_a_id: int, sample_b_id: int, round: int, judgments_wanted: int,
    priority: int = 0, kind: str = "train", selection: str = "all",
) -> Pair:
    """A pair of two samples that already exist (e.g. a policy sample against a base sample)."""
    _check_selection(selection)
    with db.session() as s:
        pair = Pair(prompt_id=prompt_id, sample_a_id=sample_a_id, sample_b_id=sample_b_id, round=round,
                    judgments_wanted=judgments_wanted, priority=priority, kind=kind, selection=selection)
        s.add(pair)
        s.flush()
        s.refresh(pair)
        return pair


def _active_annotator(s: Session, annotator_id: int) -> Annotator:
    user = s.get(Annotator, annotator_id)
    if user is None or not user.active:
        raise JudgmentError("unknown or disabled annotator")
    return user


def _served(s: Session, pair_id: int, left_side: str, expires_at: datetime) -> ServedPair:
    pair = s.get(Pair, pair_id)
    prompt = s.get(Prompt, pair.prompt_id)
    a, b = s.get(Sample, pair.sample_a_id), s.get(Sample, pair.sample_b_id)
    left, right = (a, b) if left_side == "a" else (b, a)
    return ServedPair(pair_id=pair_id, prompt_messages=json.loads(prompt.messages_json), left_text=left.text,
                      right_text=right.text, left_side=left_side, expires_at=expires_at)


def next_pair_for(
    db: Database, annotator_id: int, *, lease_seconds: int = 300, rng: random.Random | None = None,
    control_rate: float = 0.0,
) -> ServedPair | None:
    """The pair this annotator should judge next, leased to them, or None when nothing is left.

    A pair qualifies when the annotator has neither judged nor skipped it and its judgments plus
    other annotators' live leases are below its `judgments_wanted` (k). Highest priority first,
    then highest info_score, then oldest. A live lease the annotator already holds is served again
    (a page reload shows the same pair, same sides).

    control_rate: the probability in [0, 1] that a serve is a control pair this annotator has not
    seen, instead of the open pair found (see `storage.controls`); only while open pairs exist, so
    an annotator's stream is never controls alone.
    """
    rng = rng or random.Random()
    now = utcnow()
    with db.session() as s:
        _active_annotator(s, annotator_id)
        mine = s.exec(
            select(Lease).where(Lease.annotator_id == annotator_id, Lease.expires_at > now).order_by(Lease.id)
        ).first()
        if mine is not None:
            return _served(s, mine.pair_id, mine.left_side, mine.expires_at)
        judged = select(Judgment.id).where(Judgment.pair_id == Pair.id, Judgment.annotator_id == annotator_id)
        skipped = select(Skip.id).where(Skip.pair_id == Pair.id, Skip.annotator_id == annotator_id)
        others_leasing = (
            select(func.count(Lease.id))
            .where(Lease.pair_id == Pair.id, Lease.annotator_id != annotator_id, Lease.expires_at > now)
            .scalar_subquery()
        )
        query = (
            select(Pair.id)
            .where(Pair.n_judgments < Pair.judgments_wanted, ~judged.exists(), ~skipped.exists(),
                   Pair.n_judgments + others_leasing < Pair.judgments_wanted)
            .order_by(Pair.priority.desc(), Pair.info_score.desc(), Pair.id)
            .limit(1)
        )
        if not db.is_sqlite:
            # Two annotators racing for the same last slot: the loser skips to the next pair.
            query = query.with_for_update(skip_locked=True, of=Pair)
        pair_id = s.exec(query).first()
        passed: list[int] = []
        while pair_id is not None and not db.is_sqlite:
            # The locking SELECT counted leases in a snapshot taken before it waited for the lock,
            # so it can miss a lease committed by the previous lock holder; count again now.
            still_open = select(Pair.id).where(Pair.id == pair_id,
                                               Pair.n_judgments + others_leasing < Pair.judgments_wanted)
            if s.exec(still_open).first() is not None:
                break
            passed.append(pair_id)
            pair_id = s.exec(query.where(Pair.id.not_in(passed))).first()
        if pair_id is None:
            return None
        pair_id = next_control_pair(s, annotator_id, control_rate, rng) or pair_id
        expires_at = now + timedelta(seconds=lease_seconds)
        left_side = rng.choice("ab")
        lease = s.exec(select(Lease).where(Lease.pair_id == pair_id, Lease.annotator_id == annotator_id)).first()
        if lease is None:
            lease = Lease(pair_id=pair_id, annotator_id=annotator_id)
        lease.left_side, lease.served_at, lease.expires_at = left_side, now, expires_at
        s.add(lease)
        return _served(s, pair_id, left_side, expires_at)


def record_judgment(
    db: Database, *, pair_id: int, annotator_id: int, choice: str, strength: str | None = None,
    rationale: str | None = None, latency_ms: int | None = None, require_served: bool = True,
) -> tuple[Judgment, bool]:
    """Record one annotator's judgment of a pair. Returns `(judgment, created)`.

    Idempotent: a repeat (double click, retried request) returns the stored row with
    `created=False` and changes nothing. `choice` is in the pair's own a/b terms; the side that was
    shown on the left is taken from the server's lease, never from the client.
    """
    if choice not in CHOICES:
        raise JudgmentError(f"choice must be one of {', '.join(CHOICES)}, not {choice!r}")
    if strength in ("", None):
        strength = None
    elif strength not in STRENGTHS:
        raise JudgmentError(f"strength must be one of {', '.join(STRENGTHS)}, not {strength!r}")
    rationale = (rationale or "").strip() or None
    if rationale and len(rationale) > MAX_RATIONALE_CHARS:
        raise JudgmentError(f"rationale is longer than {MAX_RATIONALE_CHARS} characters")
    with db.session() as s:
        _active_annotator(s, annotator_id)
        if s.get(Pair, pair_id) is None:
            raise JudgmentError(f"pair {pair_id} does not exist")
        existing = _judgment_of(s, pair_id, annotator_id)
        if existing is not None:
            return existing, False
        lease = s.exec(select(Lease).where(Lease.pair_id == pair_id, Lease.annotator_id == annotator_id)).first()
        if lease is None and require_served:
            # On PostgreSQL a retried twin may have committed (and released the lease) after
            # `existing` was read; its judgment is then visible to this newer statement.
            existing = _judgment_of(s, pair_id, annotator_id)
            if existing is not None:
                return existing, False
            raise JudgmentError(f"pair {pair_id} was not served to this annotator")
        judgment = Judgment(pair_id=pair_id, annotator_id=annotator_id, choice=choice, strength=strength,
                            rationale=rationale, latency_ms=latency_ms,
                            left_side=lease.left_side if lease else "a")
        try:
            with s.begin_nested():
                s.add(judgment)
        except IntegrityError:
            # A concurrent twin of this request won the unique (pair, annotator) race.
            return _judgment_of(s, pair_id, annotator_id), False
        s.exec(update(Pair).where(Pair.id == pair_id).values(n_judgments=Pair.n_judgments + 1))
        if lease is not None:
            s.delete(lease)
        s.flush()
        s.refresh(judgment)
        return judgment, True


def _judgment_of(s: Session, pair_id: int, annotator_id: int) -> Judgment | None:
    return s.exec(select(Judgment).where(Judgment.pair_id == pair_id, Judgment.annotator_id == annotator_id)).first()


def skip_pair(db: Database, *, pair_id: int, annotator_id: int) -> None:
    """The annotator passes on this pair: it is never served to them again and its slot frees up."""
    with db.session() as s:
        _active_annotator(s, annotator_id)
        if s.get(Pair, pair_id) is None:
            raise JudgmentError(f"pair {pair_id} does not exist")
        s.exec(delete(Lease).where(Lease.pair_id == pair_id, Lease.annotator_id == annotator_id))
        if s.exec(select(Skip).where(Skip.pair_id == pair_id, Skip.annotator_id == annotator_id)).first() is None:
            s.add(Skip(pair_id=pair_id, annotator_id=annotator_id))


def open_pair_count(db: Database, kind: str | None = None) -> int:
    """Pairs that still want judgments."""
    with db.session() as s:
        q = select(func.count()).select_from(Pair).where(Pair.n_judgments < Pair.judgments_wanted)
        if kind:
            q = q.where(Pair.kind == kind)
        return s.exec(q).one()


def prompts_needing_pairs(db: Database, limit: int, split: str = "train", policy_version_id: int = 0) -> list[Prompt]:
    """Prompts with no open pair from this policy version, fewest pairs first."""
    with db.session() as s:
        open_here = (
            select(Pair.id)
            .join(Sample, Sample.id == Pair.sample_a_id)
            .where(Pair.prompt_id == Prompt.id, Pair.n_judgments < Pair.judgments_wanted,
                   Sample.policy_version_id == policy_version_id)
        )
        n_pairs = select(func.count(Pair.id)).where(Pair.prompt_id == Prompt.id).scalar_subquery()
        q = (select(Prompt).where(Prompt.split == split, ~open_here.exists())
             .order_by(n_pairs, Prompt.id).limit(limit))
        return list(s.exec(q))
