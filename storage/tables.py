"""SQLModel tables: the schema every other module reads through `storage`.

Timestamps are timezone-aware UTC (`utcnow()`); SQLModel stores them as UTC on both
SQLite and PostgreSQL.
"""

from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import Column, Index, Text, UniqueConstraint, text
from sqlmodel import Field, SQLModel

ROLES = ("annotator", "operator")
# A person, or an AI judge (`rlhf judge add`): an account that never logs in and holds no role (NO_ROLE).
ANNOTATOR_KINDS = ("human", "ai")
NO_ROLE = "none"
CHOICES = ("a", "b", "tie", "both_bad")
STRENGTHS = ("slight", "clear", "strong")
SPLITS = ("train", "eval")
# Prompts of imported control pairs: never sampled, never in a training or eval prompt list.
CONTROL_SPLIT = "control"
# Prompts of imported pairs (`rlhf pairs import`) and of prior preferences (`rlhf preferences import`): like
# control prompts, never sampled by the loop and in no training or eval prompt list.
IMPORTED_SPLIT = "imported"
PRIOR_SPLIT = "prior"
# "imported": a pair of responses written outside the loop (`storage.imports`): served and judged like a
# "train" pair, but never on-policy data (online DPO reads "train" pairs only).
PAIR_KINDS = ("train", "eval_vs_base", "eval_vs_previous", "control", "imported")
# Which method chose a pair for people (`sampling.pair_selection`); evaluation pairs say "eval",
# control pairs "control", imported pairs "imported".
PAIR_SELECTIONS = ("all", "random", "uncertainty", "eval", "control", "imported")
JOB_STATUSES = ("queued", "running", "done", "failed")
# A step-labeling task's row: shown to its annotator (a lease until `expires_at`), labeled, or skipped.
STEP_LABEL_STATUSES = ("served", "labeled", "skipped")


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Annotator(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    username: str = Field(index=True, unique=True, max_length=64)
    password_hash: str
    role: str = Field(default="annotator", max_length=16)
    active: bool = True
    created_at: datetime = Field(default_factory=utcnow)
    kind: str = Field(default="human", max_length=8, sa_column_kwargs={"server_default": "human"})


class Judge(SQLModel, table=True):
    """An AI judge: its account (an Annotator of kind "ai", whose judgments it writes), its kind
    (`rlhf_core.registry.JUDGE_KINDS`) and settings (base URL, model, the NAME of the environment variable that
    holds an API key, never a key), its rubric's text, and running totals of its runs (`stats_json`: requests,
    tokens, and the raw answers' first-position picks that its left-bias figure reads)."""

    id: int | None = Field(default=None, primary_key=True)
    annotator_id: int = Field(foreign_key="annotator.id", unique=True)
    kind: str = Field(max_length=32)
    settings_json: str = Field(default="{}", sa_column=Column(Text, nullable=False))
    rubric: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    stats_json: str = Field(default="{}", sa_column=Column(Text, nullable=False))
    created_at: datetime = Field(default_factory=utcnow)


class Prompt(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    messages_json: str = Field(sa_column=Column(Text, nullable=False))
    content_hash: str = Field(index=True, unique=True, max_length=64)
    source: str = Field(default="", max_length=255)
    split: str = Field(default="train", max_length=8, index=True)
    created_at: datetime = Field(default_factory=utcnow)
    # The prompt file's other fields ({"answer": 12, "tests": [...]}), passed to reward functions by name.
    columns_json: str = Field(default="{}", sa_column=Column(Text, nullable=False, server_default="{}"))


class PolicyVersion(SQLModel, table=True):
    """Version 0 is the base model (no adapter); later versions carry a LoRA adapter."""

    id: int | None = Field(default=None, primary_key=True)
    parent_id: int | None = Field(default=None, foreign_key="policyversion.id")
    adapter_path: str | None = None
    algorithm: str = Field(default="base", max_length=16)
    round: int = 0
    metrics_json: str = Field(default="{}", sa_column=Column(Text, nullable=False))
    created_at: datetime = Field(default_factory=utcnow)


class LoopState(SQLModel, table=True):
    """Named values of the loop itself, one row each: "current_policy" is the version that is served and that the
    next round starts from (promotion and `rlhf rollback` set it; without a row, the newest version)."""

    key: str = Field(primary_key=True, max_length=64)
    value: str = Field(sa_column=Column(Text, nullable=False))
    updated_at: datetime = Field(default_factory=utcnow)


class Sample(SQLModel, table=True):
    """A response: sampled from policy version `policy_version_id`, or written by a system outside
    the loop and imported (`rlhf pairs import`: no policy version, `system` names its writer)."""

    id: int | None = Field(default=None, primary_key=True)
    prompt_id: int = Field(foreign_key="prompt.id", index=True)
    policy_version_id: int | None = Field(default=None, foreign_key="policyversion.id", index=True)
    text: str = Field(sa_column=Column(Text, nullable=False))
    token_count: int = 0
    gen_params_json: str = Field(default="{}", sa_column=Column(Text, nullable=False))
    # Imported responses: the system that wrote them (a leaderboard's entry); None for policy samples,
    # whose system is their policy version ("v0", "v1", ...).
    system: str | None = Field(default=None, max_length=128)
    # Why sampling ended: "eos" (the model ended its turn) or "length" (cut at max_new_tokens); None when
    # unknown (imported, or sampled before this was recorded).
    finish_reason: str | None = Field(default=None, max_length=8)
    created_at: datetime = Field(default_factory=utcnow)


class Pair(SQLModel, table=True):
    """Two samples of one prompt to be judged by `judgments_wanted` (k) annotators.

    Open (served from the pool) while n_judgments < judgments_wanted, in the order of the partial
    index: priority, then round (the newest policy's pairs first: on-policy judgments are what the
    next update learns most from, and online DPO trains on them only), then info_score (how
    informative the sampler judged the pair), all highest first, then oldest. A control pair (kind
    "control", see ControlPair) has judgments_wanted 0, so it is never open and never
    counts as such: `next_pair_for` mixes it in by its own path.
    """

    id: int | None = Field(default=None, primary_key=True)
    prompt_id: int = Field(foreign_key="prompt.id", index=True)
    sample_a_id: int = Field(foreign_key="sample.id")
    sample_b_id: int = Field(foreign_key="sample.id")
    round: int = Field(default=0, index=True)
    kind: str = Field(default="train", max_length=16)
    judgments_wanted: int = 1
    n_judgments: int = Field(default=0, index=True)
    priority: int = Field(default=0, index=True)
    selection: str = Field(default="all", max_length=16, sa_column_kwargs={"server_default": "all"})
    info_score: float = Field(default=0.0, sa_column_kwargs={"server_default": "0"})
    # Where the pair came from: "" for pairs the loop sampled, else the name of the imported file or
    # dataset (`rlhf pairs import FILE --name SOURCE`); `metadata_json` keeps an import's own fields.
    source: str = Field(default="", max_length=255, sa_column_kwargs={"server_default": ""})
    metadata_json: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    created_at: datetime = Field(default_factory=utcnow)


# Columns in the serving order (descending where served highest first), so the first open pair is
# read off the index without a sort; partial, because most pairs are closed once judged.
Index("ix_pair_open_priority", Pair.priority.desc(), Pair.round.desc(), Pair.info_score.desc(), Pair.id,
      sqlite_where=text("n_judgments < judgments_wanted"), postgresql_where=text("n_judgments < judgments_wanted"))


class ControlPair(SQLModel, table=True):
    """A pair with a known answer (a honeypot), imported by an operator to measure annotators' accuracy.

    Its Pair has kind "control" and judgments_wanted 0; `expected` is the right choice in the
    pair's own a/b terms ("a", "b", "tie" or "both_bad"). `content_hash` (prompt and both
    responses) makes a repeated import add nothing.
    """

    id: int | None = Field(default=None, primary_key=True)
    pair_id: int = Field(foreign_key="pair.id", unique=True)
    expected: str = Field(max_length=8)
    content_hash: str = Field(index=True, unique=True, max_length=64)
    source: str = Field(default="", max_length=255)
    imported_by: str = Field(default="", max_length=64)
    created_at: datetime = Field(default_factory=utcnow)


class Judgment(SQLModel, table=True):
    __table_args__ = (UniqueConstraint("pair_id", "annotator_id", name="uq_judgment_pair_annotator"),)

    id: int | None = Field(default=None, primary_key=True)
    pair_id: int = Field(foreign_key="pair.id", index=True)
    annotator_id: int = Field(foreign_key="annotator.id", index=True)
    choice: str = Field(max_length=8)
    strength: str | None = Field(default=None, max_length=8)
    rationale: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    left_side: str = Field(default="a", max_length=1)
    latency_ms: int | None = None
    created_at: datetime = Field(default_factory=utcnow, index=True)
    # An AI judge's confidence in its choice, 0 (a coin flip) to 1; None for people.
    confidence: float | None = None
    # A person's judgment made while the page showed an AI judge's choice as a hint (`labeling.show_suggestions`):
    # left out of the judges' agreement figures, since a visible hint anchors people.
    hint_shown: bool = Field(default=False, sa_column_kwargs={"server_default": text("false")})


class Lease(SQLModel, table=True):
    """A pair served to an annotator; holds one of the pair's k slots until it expires."""

    __table_args__ = (UniqueConstraint("pair_id", "annotator_id", name="uq_lease_pair_annotator"),)

    id: int | None = Field(default=None, primary_key=True)
    pair_id: int = Field(foreign_key="pair.id", index=True)
    annotator_id: int = Field(foreign_key="annotator.id", index=True)
    left_side: str = Field(default="a", max_length=1)
    served_at: datetime = Field(default_factory=utcnow)
    expires_at: datetime = Field(index=True)


class Skip(SQLModel, table=True):
    __table_args__ = (UniqueConstraint("pair_id", "annotator_id", name="uq_skip_pair_annotator"),)

    id: int | None = Field(default=None, primary_key=True)
    pair_id: int = Field(foreign_key="pair.id", index=True)
    annotator_id: int = Field(foreign_key="annotator.id", index=True)
    created_at: datetime = Field(default_factory=utcnow)


class RewardModelVersion(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    adapter_path: str
    trained_on: int = 0
    heldout_accuracy: float | None = None
    heldout_loss: float | None = None
    metrics_json: str = Field(default="{}", sa_column=Column(Text, nullable=False))
    created_at: datetime = Field(default_factory=utcnow)


class PriorPreference(SQLModel, table=True):
    """A judgment from an existing preference dataset (`rlhf preferences import`): under the prompt,
    `chosen` was preferred to `rejected`. No annotator, never served; reward-model training counts it
    with `weight` relative to a human judgment. `content_hash` (prompt and both texts) makes a repeated
    import add nothing."""

    __tablename__ = "prior_preference"

    id: int | None = Field(default=None, primary_key=True)
    prompt_id: int = Field(foreign_key="prompt.id", index=True)
    chosen: str = Field(sa_column=Column(Text, nullable=False))
    rejected: str = Field(sa_column=Column(Text, nullable=False))
    source: str = Field(default="", max_length=255)
    weight: float = 1.0
    content_hash: str = Field(index=True, unique=True, max_length=64)
    created_at: datetime = Field(default_factory=utcnow)


class Demonstration(SQLModel, table=True):
    """A good answer to a prompt for supervised fine-tuning (stage 1): written on the labeling page
    (`author_id`, and the pair it was written from) or imported (`source`). Where it is an edit of a
    response, `edited_sample_id` is that response, and the pair "edited > original" is a preference.
    `content_hash` (prompt and text) makes a repeat (a double click, a second import) add nothing."""

    id: int | None = Field(default=None, primary_key=True)
    prompt_id: int = Field(foreign_key="prompt.id", index=True)
    text: str = Field(sa_column=Column(Text, nullable=False))
    author_id: int | None = Field(default=None, foreign_key="annotator.id", index=True)
    source: str = Field(default="", max_length=255)
    pair_id: int | None = Field(default=None, foreign_key="pair.id")
    edited_sample_id: int | None = Field(default=None, foreign_key="sample.id")
    content_hash: str = Field(index=True, unique=True, max_length=64)
    created_at: datetime = Field(default_factory=utcnow, index=True)


class StepLabel(SQLModel, table=True):
    """One annotator's labels of the steps of one response (labeling mode "steps"): the steps as they were cut when
    shown (`steps_json`, so a later change of labeling.step_split never shifts a label), one label each ("good",
    "neutral", "bad", or null after the first wrong step) and the first wrong step, if that is what was marked. The
    row is made when the response is served (status "served", holding one of its labels-wanted slots until
    `expires_at`) and becomes "labeled" or "skipped"; one per response and annotator."""

    __tablename__ = "step_label"
    __table_args__ = (UniqueConstraint("sample_id", "annotator_id", name="uq_step_label_sample_annotator"),)

    id: int | None = Field(default=None, primary_key=True)
    sample_id: int = Field(foreign_key="sample.id", index=True)
    annotator_id: int = Field(foreign_key="annotator.id", index=True)
    status: str = Field(default="served", max_length=8, index=True)
    steps_json: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    labels_json: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    first_wrong: int | None = None  # 1-based; set when the annotator marked the first wrong step
    served_at: datetime = Field(default_factory=utcnow)
    expires_at: datetime
    labeled_at: datetime | None = Field(default=None, index=True)
    latency_ms: int | None = None


class PRMVersion(SQLModel, table=True):
    """A trained process reward model (`rlhf train-prm`): its adapter and step head, how many labeled steps it was
    trained on and its accuracy on the held-out ones."""

    __tablename__ = "prm_version"

    id: int | None = Field(default=None, primary_key=True)
    adapter_path: str
    trained_on: int = 0
    heldout_step_accuracy: float | None = None
    metrics_json: str = Field(default="{}", sa_column=Column(Text, nullable=False))
    created_at: datetime = Field(default_factory=utcnow)


class Job(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    kind: str = Field(max_length=32)
    status: str = Field(default="queued", max_length=16, index=True)
    params_json: str = Field(default="{}", sa_column=Column(Text, nullable=False))
    metrics_json: str = Field(default="{}", sa_column=Column(Text, nullable=False))
    progress: float = 0.0
    message: str = Field(default="", sa_column=Column(Text, nullable=False))
    error: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    worker_id: str | None = Field(default=None, max_length=128)
    created_at: datetime = Field(default_factory=utcnow)
    started_at: datetime | None = None
    heartbeat_at: datetime | None = None
    finished_at: datetime | None = None
    # Recovery: a job whose worker died is queued again (`storage.jobs.requeue_or_fail`) until it has been started
    # `max_attempts` times; a re-queued job is not claimed before `retry_at` (the backoff).
    attempts: int = Field(default=0, sa_column_kwargs={"server_default": "0"})
    max_attempts: int = Field(default=1, sa_column_kwargs={"server_default": "1"})
    retry_at: datetime | None = None


class TrainingLog(SQLModel, table=True):
    """One row per optimisation step of a job: what a practitioner plots."""

    id: int | None = Field(default=None, primary_key=True)
    job_id: int | None = Field(default=None, foreign_key="job.id", index=True)
    phase: str = Field(max_length=16)
    step: int
    metrics_json: str = Field(default="{}", sa_column=Column(Text, nullable=False))
    created_at: datetime = Field(default_factory=utcnow)


class LoginSession(SQLModel, table=True):
    """A login. The browser holds a random token; this row holds its SHA-256, so every app process
    accepts the login and a copy of the database logs nobody in. Ended by logout (or by an
    operator: `storage.accounts.sessions.end_sessions_of`) or by time."""

    __tablename__ = "login_session"

    id: int | None = Field(default=None, primary_key=True)
    token_hash: str = Field(index=True, unique=True, max_length=64)
    annotator_id: int = Field(foreign_key="annotator.id", index=True)
    created_at: datetime = Field(default_factory=utcnow)
    expires_at: datetime = Field(index=True)
    ended_at: datetime | None = None
    end_reason: str | None = Field(default=None, max_length=32)  # "logout", "ended by operator", ...


class LoginAttempt(SQLModel, table=True):
    """One login try, good or bad, per username and client address: the throttle counts the failed
    ones in the database, so every app process refuses the same guesser."""

    __tablename__ = "login_attempt"

    id: int | None = Field(default=None, primary_key=True)
    username: str = Field(index=True, max_length=64)
    address: str = Field(index=True, max_length=64)
    ok: bool = False
    created_at: datetime = Field(default_factory=utcnow, index=True)


class AuditEvent(SQLModel, table=True):
    """Who did what, when, from where, with which parameters. Append-only: nothing in the product
    updates or deletes these rows."""

    __tablename__ = "audit_event"

    id: int | None = Field(default=None, primary_key=True)
    created_at: datetime = Field(default_factory=utcnow, index=True)
    actor: str = Field(index=True, max_length=64)  # a username, or "cli" for shell commands
    action: str = Field(index=True, max_length=32)  # "login", "login_failed", "user_disable", "export", ...
    address: str = Field(default="", max_length=64)  # client address; "" from the shell
    params_json: str = Field(default="{}", sa_column=Column(Text, nullable=False))
