"""Samples and pairs: storing generations, pairing them, counting open pairs; and the types and
checks that serving and judging (`storage.labeling.serving`) share with their callers."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import func, select
from sqlmodel import select as orm_select

from storage.db import Database
from storage.tables import CHOICES, PAIR_SELECTIONS, STRENGTHS, Lease, Pair, Prompt, Sample

MAX_RATIONALE_CHARS = 5000
# C0 controls other than tab, newline and carriage return, and DEL: PostgreSQL cannot store NUL, and
# the rest are invisible on every page that shows a reason.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
P = Pair.__table__
FINISH_REASONS = ("eos", "length", None)  # why sampling ended (Sample.finish_reason); None: unknown


class JudgmentError(ValueError):
    """A judgment refused for a reason the annotator (or the API caller) can act on."""


class SlotTaken(JudgmentError):
    """The lease ran out and the pair's free slots went to others: accepting would exceed k."""


@dataclass(frozen=True)
class ServedPair:
    """A pair as one annotator sees it: sides already assigned to left and right."""

    pair_id: int
    prompt_messages: list[dict[str, str]]
    left_text: str
    right_text: str
    left_side: str  # which sample ("a" or "b") is shown on the left
    expires_at: datetime
    served_at: datetime | None = None  # when this lease was (re)drawn; names the serve in the page's token
    # Each side's token count when sampling cut it at max_new_tokens (Sample.finish_reason "length"), else None.
    left_cut_tokens: int | None = None
    right_cut_tokens: int | None = None


@dataclass(frozen=True)
class LeaseRow:
    """The server's record of one serve: which sample was on the left, when, until when (UTC)."""

    pair_id: int
    annotator_id: int
    left_side: str
    served_at: datetime
    expires_at: datetime


# A served pair is named on the page by a serve token, "<pair id>:<lease served_at stamp>", so a
# verdict is matched against the very serve the page showed.
def serve_stamp(moment: datetime) -> str:
    """The lease time as it appears in a serve token (UTC, microseconds)."""
    aware = moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment.astimezone(timezone.utc)
    return aware.strftime("%Y%m%dT%H%M%S%f")


def serve_token(pair_id: int, served_at: datetime) -> str:
    return f"{pair_id}:{serve_stamp(served_at)}"


def parse_serve_token(token: str | None) -> tuple[int, str] | None:
    pair_id, sep, stamp = (token or "").partition(":")
    if not sep or not pair_id.isdigit() or not stamp:
        return None
    return int(pair_id), stamp


# What happened to the verdict (or skip, or undo) an annotator event carried; the page words each one.
OUTCOMES = ("saved", "already_saved", "skipped", "no_token", "not_yours", "shown_again", "slot_taken",
            "undone", "undo_too_late")


@dataclass(frozen=True)
class AnnotatorProgress:
    judged_since: int  # judgments by this annotator since the given time
    judged_total: int  # all judgments by this annotator
    pairs_open: int  # pairs that still want judgments (all annotators)


@dataclass(frozen=True)
class AnnotatorScreen:
    """The annotator's screen after an event: the pair now leased to them (None: nothing left),
    its serve token, their progress, and the outcome of what the event submitted."""

    pair: ServedPair | None
    token: str
    progress: AnnotatorProgress
    outcome: str = ""  # one of OUTCOMES, or "" for a plain look
    outcome_pair: int | None = None  # the pair the outcome is about
    created: bool = False  # a new judgment row was written
    judgment_id: int | None = None  # the row a "saved" outcome wrote (what an undo names)


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
    db: Database, *, prompt_id: int, policy_version_id: int, responses: list[tuple],
    gen_params: dict[str, Any], pairs: list[tuple[int, int]], round: int = 0, judgments_wanted: int = 1,
    priority: int = 0, kind: str = "train", info_scores: list[float] | None = None, selection: str = "all",
) -> list[Pair]:
    """Store one prompt's sampled responses `(text, token_count)` or `(text, token_count,
    finish_reason)` (see `sample_rows`) and the pairs between them (`pairs` holds indices into
    `responses`), atomically.

    selection: the method that chose these pairs (`PAIR_SELECTIONS`). info_scores: one per pair, how
    informative the sampler judged it (higher is served first among pairs of equal priority);
    None stores 0.0 for each.
    """
    _check_selection(selection)
    scores = _checked_scores(info_scores, len(pairs))
    with db.session() as s:
        samples = sample_rows(prompt_id, policy_version_id, responses, gen_params)
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


def sample_rows(prompt_id: int, policy_version_id: int | None, responses: list[tuple],
                gen_params: dict[str, Any]) -> list[Sample]:
    """Sample rows for `responses`: `(text, token_count)`, or `(text, token_count, finish_reason)`
    with finish_reason "eos" (the model ended), "length" (cut at max_new_tokens) or None (unknown)."""
    rows = []
    for text, n, *rest in responses:
        reason = rest[0] if rest else None
        if reason not in FINISH_REASONS:
            raise ValueError(f"finish_reason must be one of eos, length or None, not {reason!r}")
        text = text.replace("\x00", "")  # a model can emit NUL, which PostgreSQL's text cannot hold
        rows.append(Sample(prompt_id=prompt_id, policy_version_id=policy_version_id, text=text, token_count=n,
                           finish_reason=reason, gen_params_json=json.dumps(gen_params)))
    return rows


def add_samples(db: Database, *, prompt_id: int, policy_version_id: int, responses: list[tuple],
                gen_params: dict[str, Any]) -> list[int]:
    """Store responses (as `sample_rows` takes them) without pairing them; returns their ids in order."""
    with db.session() as s:
        samples = sample_rows(prompt_id, policy_version_id, responses, gen_params)
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


def check_judgment(choice: str, strength: str | None, rationale: str | None) -> tuple[str | None, str | None]:
    """`(strength, rationale)` normalised (empty -> None), or JudgmentError naming the bad field."""
    if choice not in CHOICES:
        raise JudgmentError(f"choice must be one of {', '.join(CHOICES)}, not {choice!r}")
    if strength in ("", None):
        strength = None
    elif strength not in STRENGTHS:
        raise JudgmentError(f"strength must be one of {', '.join(STRENGTHS)}, not {strength!r}")
    rationale = (rationale or "").strip() or None
    if rationale and len(rationale) > MAX_RATIONALE_CHARS:
        raise JudgmentError(f"rationale is longer than {MAX_RATIONALE_CHARS} characters")
    if rationale and (bad := _CONTROL.search(rationale)):
        raise JudgmentError(f"the reason contains the control character U+{ord(bad.group()):04X}; remove it")
    return strength, rationale


def open_pair_count(db: Database, kind: str | None = None) -> int:
    """Pairs that still want judgments."""
    q = select(func.count()).select_from(P).where(P.c.n_judgments < P.c.judgments_wanted)
    if kind:
        q = q.where(P.c.kind == kind)
    with db.transaction() as conn:
        return conn.execute(q).scalar_one()


def prompts_needing_pairs(db: Database, limit: int, split: str = "train", policy_version_id: int = 0) -> list[Prompt]:
    """Prompts with no open pair from this policy version, fewest pairs first."""
    with db.session() as s:
        open_here = (
            orm_select(Pair.id)
            .join(Sample, Sample.id == Pair.sample_a_id)
            .where(Pair.prompt_id == Prompt.id, Pair.n_judgments < Pair.judgments_wanted,
                   Sample.policy_version_id == policy_version_id)
        )
        n_pairs = orm_select(func.count(Pair.id)).where(Pair.prompt_id == Prompt.id).scalar_subquery()
        q = (orm_select(Prompt).where(Prompt.split == split, ~open_here.exists())
             .order_by(n_pairs, Prompt.id).limit(limit))
        return list(s.exec(q))


def retire_open_pairs(db: Database, policy_version_ids: list[int]) -> int:
    """Close the open training pairs sampled from `policy_version_ids` (versions no longer current: a rollback or a
    demotion): each keeps the judgments it has, and the slots of annotators who hold it now, and wants no more, so
    the page serves the current version's pairs. Returns how many pairs were closed."""
    if not policy_version_ids:
        return 0
    now = datetime.now(timezone.utc)
    with db.session() as s:
        from_versions = orm_select(Sample.id).where(Sample.policy_version_id.in_(policy_version_ids))
        pairs = s.exec(orm_select(Pair).where(Pair.kind == "train", Pair.n_judgments < Pair.judgments_wanted,
                                              Pair.sample_a_id.in_(from_versions))).all()
        held = dict(s.exec(orm_select(Lease.pair_id, func.count()).where(
            Lease.pair_id.in_([p.id for p in pairs]), Lease.expires_at > now).group_by(Lease.pair_id)).all())
        for pair in pairs:
            pair.judgments_wanted = min(pair.judgments_wanted, pair.n_judgments + held.get(pair.id, 0))
            s.add(pair)
        return len(pairs)
