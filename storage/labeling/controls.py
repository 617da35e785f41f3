"""Control pairs (honeypots): pairs with a known answer that an operator imports and that are mixed
into every annotator's stream at `labeling.control_rate`, to measure each annotator's accuracy.

A control pair is an ordinary Pair (kind "control"; served as the same `ServedPair`, sides at
random) whose judgments_wanted is 0. So it is never open: it never counts in `pairs_open`, never
keeps the pool from being topped up and is never picked by the open-pair query; `next_pair_for`
mixes it in through `next_control_pair`. Its prompt has the split "control" (never sampled, never
a training or eval prompt) and its two samples belong to policy version 0. Anything that reads
judgments by pair kind ("train", "eval_vs_base") leaves control judgments out.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass

from sqlalchemy import bindparam
from sqlalchemy import exists as sa_exists
from sqlalchemy import select as sa_select
from sqlalchemy.engine import Connection
from sqlmodel import Session, func, select

from storage.db import Database
from storage.prompts import canonical_messages
from storage.tables import (
    CHOICES,
    CONTROL_SPLIT,
    Annotator,
    ControlPair,
    Judgment,
    Lease,
    Pair,
    Prompt,
    Sample,
    Skip,
)
from storage.versions import ensure_base_policy

CONTROL_KIND = "control"


@dataclass(frozen=True)
class ControlSpec:
    """One control pair to import: the prompt (chat messages), two responses, and the right choice
    in the pair's own terms ("a", "b", "tie" or "both_bad")."""

    messages: list[dict[str, str]]
    response_a: str
    response_b: str
    expected: str


@dataclass(frozen=True)
class ControlImportResult:
    added: int
    duplicates: int  # already stored, or repeated within the import


@dataclass(frozen=True)
class ControlJudgment:
    """One judgment of a control pair, with the answer it should have given."""

    annotator: str
    choice: str
    expected: str
    left_side: str = "a"  # which side of the pair was shown on the left


def control_hash(spec: ControlSpec) -> str:
    """Identity of a control pair: its prompt and both responses in order (not the expected choice)."""
    body = json.dumps([canonical_messages(spec.messages), spec.response_a, spec.response_b], ensure_ascii=False)
    return hashlib.sha256(body.encode()).hexdigest()


def _control_prompt_hash(messages: list[dict[str, str]]) -> str:
    # Salted, so a control prompt never takes the place of the same training or eval prompt (nor the reverse).
    return hashlib.sha256(f"{CONTROL_SPLIT}\0{canonical_messages(messages)}".encode()).hexdigest()


def add_control_pairs(db: Database, controls: list[ControlSpec], *, source: str = "", imported_by: str = ""
                      ) -> ControlImportResult:
    """Store control pairs in one transaction; ones already stored (or repeated) are counted, not added.

    Raises ValueError, before writing anything, when an expected choice is not one of CHOICES.
    """
    for index, spec in enumerate(controls):
        if spec.expected not in CHOICES:
            raise ValueError(f"control {index}: expected must be one of {', '.join(CHOICES)}, not {spec.expected!r}")
    ensure_base_policy(db)
    added = 0
    hashes = [control_hash(spec) for spec in controls]
    with db.session() as s:
        existing: set[str] = set()
        for start in range(0, len(hashes), 500):
            chunk = hashes[start:start + 500]
            existing.update(s.exec(select(ControlPair.content_hash).where(ControlPair.content_hash.in_(chunk))).all())
        prompts: dict[str, int] = {}
        for spec, digest in zip(controls, hashes, strict=True):
            if digest in existing:
                continue
            existing.add(digest)
            prompt_id = _control_prompt(s, spec.messages, prompts, source)
            params = json.dumps({"purpose": CONTROL_KIND, "source": source})
            a, b = (Sample(prompt_id=prompt_id, policy_version_id=0, text=text, token_count=0, gen_params_json=params)
                    for text in (spec.response_a, spec.response_b))
            s.add_all([a, b])
            s.flush()
            pair = Pair(prompt_id=prompt_id, sample_a_id=a.id, sample_b_id=b.id, round=0, kind=CONTROL_KIND,
                        judgments_wanted=0, selection=CONTROL_KIND)
            s.add(pair)
            s.flush()
            s.add(ControlPair(pair_id=pair.id, expected=spec.expected, content_hash=digest, source=source[:255],
                              imported_by=imported_by[:64]))
            added += 1
    return ControlImportResult(added=added, duplicates=len(controls) - added)


def _control_prompt(s: Session, messages: list[dict[str, str]], known: dict[str, int], source: str) -> int:
    digest = _control_prompt_hash(messages)
    if digest not in known:
        prompt = s.exec(select(Prompt).where(Prompt.content_hash == digest)).first()
        if prompt is None:
            prompt = Prompt(messages_json=canonical_messages(messages), content_hash=digest, split=CONTROL_SPLIT,
                            source=source[:255])
            s.add(prompt)
            s.flush()
        known[digest] = prompt.id
    return known[digest]


_CP, _J, _K, _L = (t.__table__ for t in (ControlPair, Judgment, Skip, Lease))
_ANN = bindparam("annotator")
# Control pairs this annotator was never served: no judgment, skip or lease of theirs.
_UNSEEN_CONTROLS = (
    sa_select(_CP.c.pair_id)
    .where(~sa_exists(sa_select(_J.c.id).where(_J.c.pair_id == _CP.c.pair_id, _J.c.annotator_id == _ANN)),
           ~sa_exists(sa_select(_K.c.id).where(_K.c.pair_id == _CP.c.pair_id, _K.c.annotator_id == _ANN)),
           ~sa_exists(sa_select(_L.c.id).where(_L.c.pair_id == _CP.c.pair_id, _L.c.annotator_id == _ANN)))
    .order_by(_CP.c.pair_id)
)


def next_control_pair(conn: Connection, annotator_id: int, control_rate: float, rng: random.Random) -> int | None:
    """With probability `control_rate`, a control pair this annotator was never served (no judgment,
    skip or lease of theirs), chosen at random; else None. Draws from `rng` only when the rate is > 0.
    Runs inside the caller's transaction (`storage.labeling.serving`)."""
    if control_rate <= 0.0 or rng.random() >= control_rate:
        return None
    unseen = conn.execute(_UNSEEN_CONTROLS, {"annotator": annotator_id}).scalars().all()
    return rng.choice(unseen) if unseen else None


def control_judgments(db: Database) -> list[ControlJudgment]:
    """Every judgment of a control pair, oldest first."""
    with db.session() as s:
        rows = s.exec(
            select(Annotator.username, Judgment.choice, ControlPair.expected, Judgment.left_side)
            .join(Judgment, Judgment.pair_id == ControlPair.pair_id)
            .join(Annotator, Annotator.id == Judgment.annotator_id)
            .order_by(Judgment.id)
        ).all()
    return [ControlJudgment(annotator=name, choice=choice, expected=expected, left_side=left)
            for name, choice, expected, left in rows]


def count_control_pairs(db: Database) -> int:
    with db.session() as s:
        return s.exec(select(func.count()).select_from(ControlPair)).one()
