"""Data from outside the loop, each import written in one transaction: pairs of responses that other systems
wrote (`rlhf pairs import`: kind "imported", judged like sampled pairs), and prior judgments from existing
preference datasets (`rlhf preferences import`: no annotator, never served). Also the reads that use them:
prior rows for training and export, counts, and the judgments that name both systems (the leaderboard's data).

Prompts of either import are stored apart from the loop's (splits "imported" and "prior", salted content
hashes), so the loop never samples them and a later `rlhf prompts import` of the same text adds a training
prompt of its own.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import aliased
from sqlmodel import Session, func, select

from storage.db import Database
from storage.prompts import canonical_messages
from storage.tables import (
    IMPORTED_SPLIT,
    PRIOR_SPLIT,
    Judgment,
    Pair,
    PolicyVersion,
    PriorPreference,
    Prompt,
    Sample,
)
from storage.versions import ensure_base_policy

IMPORTED_KIND = "imported"
MAX_SYSTEM_CHARS = 128


@dataclass(frozen=True)
class PairSpec:
    """One imported pair: the prompt (chat messages), two responses, the systems that wrote them (None:
    unnamed) and the record's own `metadata` (kept and exported)."""

    messages: list[dict[str, str]]
    response_a: str
    response_b: str
    system_a: str | None = None
    system_b: str | None = None
    metadata: dict[str, Any] | None = None


@dataclass(frozen=True)
class PriorSpec:
    """One prior judgment: under the prompt, `chosen` was preferred to `rejected`."""

    messages: list[dict[str, str]]
    chosen: str
    rejected: str


@dataclass(frozen=True)
class ImportCounts:
    added: int
    duplicates: int  # already stored, or repeated within the import


@dataclass(frozen=True)
class PriorRow:
    """A stored prior judgment with its prompt, for reward-model training and `rlhf export --include-prior`."""

    id: int
    prompt_id: int
    prompt_messages: list[dict[str, str]]
    chosen: str
    rejected: str
    source: str
    weight: float


@dataclass(frozen=True)
class SystemJudgment:
    """A judgment of a pair whose two responses both name their system: an imported system's name, or
    "v<N>" for a response sampled from policy version N."""

    system_a: str
    system_b: str
    choice: str
    kind: str


def policy_system(version_id: int) -> str:
    """The system name of policy version `version_id` on the leaderboard."""
    return f"v{version_id}"


def _salted(split: str, messages: list[dict[str, str]]) -> str:
    return hashlib.sha256(f"{split}\0{canonical_messages(messages)}".encode()).hexdigest()


def _digest(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, ensure_ascii=False).encode()).hexdigest()


def pair_hash(messages: list[dict[str, str]], response_a: str, response_b: str) -> str:
    """Identity of an imported pair: its prompt and its two responses in either order."""
    return _digest(canonical_messages(messages), *sorted((response_a, response_b)))


def prior_hash(spec: PriorSpec) -> str:
    """Identity of a prior judgment: prompt, chosen, rejected (the reverse judgment is another one)."""
    return _digest(canonical_messages(spec.messages), spec.chosen, spec.rejected)


def _outside_prompt(s: Session, split: str, messages: list[dict[str, str]], known: dict[str, int],
                    source: str) -> int:
    digest = _salted(split, messages)
    if digest not in known:
        prompt = s.exec(select(Prompt).where(Prompt.content_hash == digest)).first()
        if prompt is None:
            prompt = Prompt(messages_json=canonical_messages(messages), content_hash=digest, split=split,
                            source=source[:255])
            s.add(prompt)
            s.flush()
        known[digest] = prompt.id
    return known[digest]


def _stored_pair_hashes(s: Session, prompt_hashes: list[str]) -> set[str]:
    """pair_hash of every imported pair already stored under these (salted) prompt hashes."""
    sa_, sb_ = aliased(Sample), aliased(Sample)
    found: set[str] = set()
    for start in range(0, len(prompt_hashes), 500):
        rows = s.exec(
            select(Prompt.messages_json, sa_.text, sb_.text)
            .join(Pair, Pair.prompt_id == Prompt.id)
            .join(sa_, sa_.id == Pair.sample_a_id).join(sb_, sb_.id == Pair.sample_b_id)
            .where(Prompt.content_hash.in_(prompt_hashes[start:start + 500]), Pair.kind == IMPORTED_KIND)
        ).all()
        found.update(_digest(messages_json, *sorted((a, b))) for messages_json, a, b in rows)
    return found


def add_imported_pairs(db: Database, specs: list[PairSpec], *, source: str, judgments_wanted: int
                       ) -> ImportCounts:
    """Store imported pairs in one transaction; pairs already stored (or repeated) are counted, not added.

    Each becomes a Pair of kind "imported" (`source` recorded, `metadata` as JSON) wanting `judgments_wanted`
    judgments, in the current policy's round, priority 0: served, leased and judged like sampled pairs. Its
    responses are Samples without a policy version, named by their system (a response repeated under one
    prompt and system is stored once).
    """
    if judgments_wanted < 1:
        raise ValueError(f"judgments_wanted must be at least 1, got {judgments_wanted}")
    ensure_base_policy(db)
    params = json.dumps({"purpose": IMPORTED_KIND, "source": source})
    added = 0
    with db.session() as s:
        round_ = s.exec(select(PolicyVersion.round).order_by(PolicyVersion.id.desc())).first() or 0
        existing = _stored_pair_hashes(s, sorted({_salted(IMPORTED_SPLIT, spec.messages) for spec in specs}))
        prompts: dict[str, int] = {}
        samples: dict[tuple[int, str | None, str], int] = {}
        for spec in specs:
            digest = pair_hash(spec.messages, spec.response_a, spec.response_b)
            if digest in existing:
                continue
            existing.add(digest)
            prompt_id = _outside_prompt(s, IMPORTED_SPLIT, spec.messages, prompts, source)
            ids = []
            for text, system in ((spec.response_a, spec.system_a), (spec.response_b, spec.system_b)):
                key = (prompt_id, system, text)
                if key not in samples:
                    sample = Sample(prompt_id=prompt_id, policy_version_id=None, system=system, text=text,
                                    token_count=0, gen_params_json=params)
                    s.add(sample)
                    s.flush()
                    samples[key] = sample.id
                ids.append(samples[key])
            s.add(Pair(prompt_id=prompt_id, sample_a_id=ids[0], sample_b_id=ids[1], round=round_, kind=IMPORTED_KIND,
                       judgments_wanted=judgments_wanted, selection=IMPORTED_KIND, source=source[:255],
                       metadata_json=None if spec.metadata is None else json.dumps(spec.metadata, ensure_ascii=False)))
            added += 1
    return ImportCounts(added=added, duplicates=len(specs) - added)


def add_prior_preferences(db: Database, specs: list[PriorSpec], *, source: str, weight: float = 1.0
                          ) -> ImportCounts:
    """Store prior judgments in one transaction, each with `source` and `weight` (relative to one human
    judgment; reward training multiplies it by `reward.prior_weight`); repeats are counted, not added."""
    if not weight >= 0 or weight == float("inf"):
        raise ValueError(f"weight must be a finite number >= 0, got {weight}")
    hashes = [prior_hash(spec) for spec in specs]
    added = 0
    with db.session() as s:
        existing: set[str] = set()
        for start in range(0, len(hashes), 500):
            chunk = hashes[start:start + 500]
            existing.update(s.exec(select(PriorPreference.content_hash)
                                   .where(PriorPreference.content_hash.in_(chunk))).all())
        prompts: dict[str, int] = {}
        for spec, digest in zip(specs, hashes, strict=True):
            if digest in existing:
                continue
            existing.add(digest)
            prompt_id = _outside_prompt(s, PRIOR_SPLIT, spec.messages, prompts, source)
            s.add(PriorPreference(prompt_id=prompt_id, chosen=spec.chosen, rejected=spec.rejected,
                                  source=source[:255], weight=weight, content_hash=digest))
            added += 1
    return ImportCounts(added=added, duplicates=len(specs) - added)


def prior_preference_rows(db: Database) -> list[PriorRow]:
    """Every prior judgment with its prompt, oldest first."""
    with db.session() as s:
        rows = s.exec(select(PriorPreference, Prompt.messages_json)
                      .join(Prompt, Prompt.id == PriorPreference.prompt_id).order_by(PriorPreference.id)).all()
    return [PriorRow(id=p.id, prompt_id=p.prompt_id, prompt_messages=json.loads(messages), chosen=p.chosen,
                     rejected=p.rejected, source=p.source, weight=p.weight) for p, messages in rows]


def prior_counts(db: Database) -> dict[str, int]:
    """Prior judgments per source."""
    with db.session() as s:
        rows = s.exec(select(PriorPreference.source, func.count(PriorPreference.id))
                      .group_by(PriorPreference.source).order_by(PriorPreference.source)).all()
    return {source: n for source, n in rows}


def imported_pair_counts(db: Database) -> dict[str, dict[str, int]]:
    """Per import source: its pairs and how many still want judgments."""
    with db.session() as s:
        rows = s.exec(select(Pair.source, Pair.n_judgments < Pair.judgments_wanted)
                      .where(Pair.kind == IMPORTED_KIND)).all()
    pairs, still_open = Counter(source for source, _ in rows), Counter(source for source, o in rows if o)
    return {source: {"pairs": n, "open": still_open[source]} for source, n in sorted(pairs.items())}


def system_judgments(db: Database) -> list[SystemJudgment]:
    """Judgments of non-control pairs whose two responses both name a system (see SystemJudgment), oldest
    first. Pairs of one system against itself are left out: they rank nothing."""
    sa_, sb_ = aliased(Sample), aliased(Sample)
    with db.session() as s:
        rows = s.exec(
            select(Judgment.choice, Pair.kind, sa_.system, sa_.policy_version_id, sb_.system, sb_.policy_version_id)
            .join(Pair, Pair.id == Judgment.pair_id)
            .join(sa_, sa_.id == Pair.sample_a_id).join(sb_, sb_.id == Pair.sample_b_id)
            .where(Pair.kind != "control").order_by(Judgment.id)
        ).all()
    out = []
    for choice, kind, system_a, version_a, system_b, version_b in rows:
        a = system_a or (None if version_a is None else policy_system(version_a))
        b = system_b or (None if version_b is None else policy_system(version_b))
        if a is not None and b is not None and a != b:
            out.append(SystemJudgment(system_a=a, system_b=b, choice=choice, kind=kind))
    return out
