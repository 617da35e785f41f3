"""Demonstrations (stage 1): good answers to prompts for supervised fine-tuning, written on the labeling
page (`record_demonstration`: the author, the pair on screen, and the response it edited, if any) or
imported from a file (`add_demonstrations`); read back for SFT, export and the "edited > original"
preferences (`demonstration_rows`), and counted for status views (`demonstration_counts`).

A repeat adds nothing: each row's `content_hash` (prompt and text) is unique, so a double click on the
page, or a file imported twice, stores one row. The author of a written demonstration is audited in
the same transaction that stores it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, insert, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from storage.db import Database
from storage.labeling.pairs import _CONTROL, parse_serve_token, serve_stamp
from storage.labeling.serving import active_lease_on
from storage.prompts import canonical_messages
from storage.prompts import content_hash as prompt_hash
from storage.tables import Annotator, AuditEvent, Demonstration, Pair, Prompt, Sample, utcnow

# Longer than the reason box's 5,000: an answer may be long. The other rules are the reason box's.
MAX_DEMONSTRATION_CHARS = 20_000
START_SIDES = ("left", "right")  # the response on screen a demonstration was started from
D, PR, P, S, A, AUD = (t.__table__ for t in (Demonstration, Prompt, Pair, Sample, Annotator, AuditEvent))


class DemonstrationError(ValueError):
    """A demonstration refused for a reason the writer can act on; the message is one sentence for them."""


@dataclass(frozen=True)
class DemonstrationSpec:
    """One demonstration to import: the prompt's chat messages and the answer."""

    messages: list[dict[str, str]]
    text: str


@dataclass(frozen=True)
class DemonstrationImportResult:
    added: int
    duplicates: int
    prompts_added: int


@dataclass(frozen=True)
class SavedDemonstration:
    """What `record_demonstration` did: the row (new or already there), its pair, and whether it is an
    edit of a response (so it also counts as the preference "edited > original")."""

    demonstration_id: int
    pair_id: int
    created: bool
    edited: bool


@dataclass(frozen=True)
class DemonstrationRow:
    """A stored demonstration with what SFT, export and reward training need."""

    id: int
    prompt_id: int
    prompt_messages: list[dict[str, str]]
    prompt_split: str
    text: str
    author: str | None  # None: imported (see `source`)
    source: str
    pair_id: int | None
    edited_sample_id: int | None
    original_text: str | None  # the response it edits, if it is an edit
    created_at: datetime


def demonstration_hash(messages: list[dict[str, str]], text: str) -> str:
    """SHA-256 of the canonical prompt and the answer: what makes a demonstration a repeat."""
    return hashlib.sha256((canonical_messages(messages) + "\x00" + text).encode()).hexdigest()


def check_demonstration_text(text: str | None, *, max_chars: int = MAX_DEMONSTRATION_CHARS) -> str:
    """The answer without surrounding whitespace, or DemonstrationError: empty, too long, or holding a
    control character (tab and newline are fine) or an unpaired surrogate, as the reason box refuses."""
    text = (text or "").strip()
    if not text:
        raise DemonstrationError("Not saved: the answer is empty. Write it, or start from one of the responses.")
    if len(text) > max_chars:
        raise DemonstrationError(f"Not saved: the answer is {len(text)} characters long, over the limit of "
                                 f"{max_chars}. Shorten it.")
    if bad := _CONTROL.search(text):
        raise DemonstrationError(f"Not saved: the answer contains the control character U+{ord(bad.group()):04X}. "
                                 "Remove it.")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise DemonstrationError(f"Not saved: the answer contains the unpaired surrogate "
                                 f"U+{ord(text[exc.start]):04X}, which is not text. Remove it.") from None
    return text


def _insert_new(conn: Connection, values: dict) -> int | None:  # noqa: ANN001 - a row's column values
    """Insert a demonstration unless its content hash is stored already; the new id, or None."""
    dialect = {"sqlite": sqlite, "postgresql": postgresql}[conn.dialect.name]
    stmt = dialect.insert(D).values(**values).on_conflict_do_nothing(index_elements=[D.c.content_hash])
    return conn.execute(stmt.returning(D.c.id)).scalar()


def served_texts(db: Database, annotator_id: int, token: str | None) -> tuple[str, str] | None:
    """The (left, right) response texts of the serve `token` names, in the sides the annotator was shown;
    None when that serve is not (or no longer) theirs. JudgmentError for a disabled account."""
    parsed = parse_serve_token(token)
    if parsed is None:
        return None
    pair_id, stamp = parsed
    sa, sb = S.alias("sa"), S.alias("sb")
    with db.transaction() as conn:
        lease = active_lease_on(conn, pair_id, annotator_id)
        if lease is None or serve_stamp(lease.served_at) != stamp:
            return None
        a, b = conn.execute(select(sa.c.text, sb.c.text)
                            .select_from(P.join(sa, sa.c.id == P.c.sample_a_id).join(sb, sb.c.id == P.c.sample_b_id))
                            .where(P.c.id == pair_id)).one()
    return (a, b) if lease.left_side == "a" else (b, a)


def record_demonstration(db: Database, annotator_id: int, *, token: str | None, text: str | None,
                         start_side: str | None = None, actor: str = "", address: str = "",
                         max_chars: int = MAX_DEMONSTRATION_CHARS) -> SavedDemonstration:
    """Store an annotator's answer to the pair on their screen (named by its serve `token`), in one
    transaction with its audit row. `start_side` ("left", "right" or empty) is the response the writer
    started from: when the saved text differs from it, the demonstration is an edit of that sample, which
    reward training may read as "edited > original". The pair must still be leased to the annotator in the
    serve the page showed. A repeat (double click) returns the stored row with `created` False.
    Raises DemonstrationError (bad text, no such serve) or JudgmentError (a disabled account)."""
    text = check_demonstration_text(text, max_chars=max_chars)
    if start_side not in (None, "", *START_SIDES):
        raise DemonstrationError(f"Not saved: start_side must be left, right or empty, not {start_side!r}.")
    parsed = parse_serve_token(token)
    if parsed is None:
        raise DemonstrationError("Not saved: no pair is shown. An answer is written for the pair on screen.")
    pair_id, stamp = parsed
    with db.transaction() as conn:
        lease = active_lease_on(conn, pair_id, annotator_id)
        if lease is None or serve_stamp(lease.served_at) != stamp:
            raise DemonstrationError(f"Not saved: pair #{pair_id} is no longer shown to you as it was. "
                                     "Write your answer for the pair on screen.")
        pair = conn.execute(select(P.c.prompt_id, P.c.sample_a_id, P.c.sample_b_id, PR.c.messages_json)
                            .select_from(P.join(PR, PR.c.id == P.c.prompt_id)).where(P.c.id == pair_id)).one()
        edited = None
        if start_side:
            on_left_a = lease.left_side == "a"
            sample_id = pair.sample_a_id if (start_side == "left") == on_left_a else pair.sample_b_id
            original = conn.execute(select(S.c.text).where(S.c.id == sample_id)).scalar_one()
            edited = sample_id if original.strip() != text else None
        content = demonstration_hash(json.loads(pair.messages_json), text)
        new_id = _insert_new(conn, {"prompt_id": pair.prompt_id, "text": text, "author_id": annotator_id,
                                    "source": "labeling page", "pair_id": pair_id, "edited_sample_id": edited,
                                    "content_hash": content, "created_at": utcnow()})
        if new_id is None:
            row = conn.execute(select(D.c.id, D.c.edited_sample_id).where(D.c.content_hash == content)).one()
            return SavedDemonstration(row.id, pair_id, created=False, edited=row.edited_sample_id is not None)
        conn.execute(insert(AUD).values(
            created_at=utcnow(), actor=(actor or f"annotator:{annotator_id}")[:64], action="demonstration",
            address=(address or "")[:64], params_json=json.dumps(
                {"demonstration": new_id, "pair": pair_id, "edited_sample": edited}, sort_keys=True)))
    return SavedDemonstration(new_id, pair_id, created=True, edited=edited is not None)


def add_demonstrations(db: Database, specs: list[DemonstrationSpec], *, source: str, actor: str = "",
                       split: str = "train") -> DemonstrationImportResult:
    """Store imported demonstrations in one transaction (with one audit row): a prompt not stored yet is
    added to `split`; a demonstration already stored (or repeated in `specs`) is counted, not added."""
    added = prompts_added = 0
    with db.transaction() as conn:
        seen: set[str] = set()
        for spec in specs:
            content = demonstration_hash(spec.messages, spec.text)
            if content in seen:
                continue
            seen.add(content)
            key = prompt_hash(spec.messages)
            prompt_id = conn.execute(select(PR.c.id).where(PR.c.content_hash == key)).scalar()
            if prompt_id is None:
                prompt_id = conn.execute(insert(PR).values(
                    messages_json=canonical_messages(spec.messages), content_hash=key, source=source[:255],
                    split=split, created_at=utcnow()).returning(PR.c.id)).scalar_one()
                prompts_added += 1
            if _insert_new(conn, {"prompt_id": prompt_id, "text": spec.text, "source": source[:255],
                                  "content_hash": content, "created_at": utcnow()}) is not None:
                added += 1
        if actor:
            conn.execute(insert(AUD).values(created_at=utcnow(), actor=actor[:64], action="demos_import",
                                            params_json=json.dumps({"source": source, "added": added},
                                                                   sort_keys=True)))
    return DemonstrationImportResult(added=added, duplicates=len(specs) - added, prompts_added=prompts_added)


def demonstration_rows(db: Database, *, edits_only: bool = False) -> list[DemonstrationRow]:
    """Every demonstration (oldest first) with its prompt, author and, for an edit, the original response."""
    query = (select(D, PR.c.messages_json, PR.c.split, A.c.username, S.c.text.label("original"))
             .select_from(D.join(PR, PR.c.id == D.c.prompt_id).outerjoin(A, A.c.id == D.c.author_id)
                          .outerjoin(S, S.c.id == D.c.edited_sample_id))
             .order_by(D.c.id))
    if edits_only:
        query = query.where(D.c.edited_sample_id.is_not(None))
    with db.transaction() as conn:
        rows = conn.execute(query).all()
    return [DemonstrationRow(id=r.id, prompt_id=r.prompt_id, prompt_messages=json.loads(r.messages_json),
                             prompt_split=r.split, text=r.text, author=r.username, source=r.source,
                             pair_id=r.pair_id, edited_sample_id=r.edited_sample_id, original_text=r.original,
                             created_at=r.created_at)
            for r in rows]


def demonstration_counts(db: Database) -> dict[str, int]:
    """{"demonstrations", "written" (on the page), "edits" (of a response), "imported"}."""
    query = select(func.count(D.c.id), func.count(D.c.author_id), func.count(D.c.edited_sample_id))
    with db.transaction() as conn:
        total, written, edits = conn.execute(query).one()
    return {"demonstrations": total, "written": written, "edits": edits, "imported": total - written}
