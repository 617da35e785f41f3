"""The only package that talks to the database. Everything else calls these functions."""

from storage.controls import (
    ControlImportResult,
    ControlJudgment,
    ControlSpec,
    add_control_pairs,
    control_judgments,
    count_control_pairs,
)
from storage.db import Database, DatabaseError, normalize_url
from storage.export_queries import pair_kinds
from storage.jobs import (
    TRAINING_KINDS,
    JobError,
    active_job,
    add_training_logs,
    claim_next_job,
    enqueue_job,
    fail_job,
    fail_stale_jobs,
    finish_job,
    get_job,
    heartbeat_job,
    judgments_since_last_round,
    last_finished_job,
    list_jobs,
    retry_job,
    training_logs,
    update_job_progress,
)
from storage.pairs import (
    OUTCOMES,
    SCREEN_PICKS,
    AnnotatorProgress,
    AnnotatorScreen,
    JudgmentError,
    ServedPair,
    SlotTaken,
    add_pair_between,
    add_samples,
    choice_from_screen,
    open_pair_count,
    parse_serve_token,
    prompts_needing_pairs,
    record_generations,
    serve_token,
)
from storage.prompts import ImportResult, add_prompts, content_hash, count_prompts, list_prompts, prompt_messages
from storage.queries import JudgmentRow, judgment_rows, judgments_per_day, pair_selection_counts, status_counts
from storage.serving import (
    annotator_progress,
    annotator_screen,
    next_pair_for,
    record_judgment,
    skip_pair,
    skip_shown,
    submit_verdict,
)
from storage.sessions import (
    SessionUser,
    end_session,
    end_sessions_of,
    open_session_count,
    session_user,
    start_session,
)
from storage.tables import (
    CHOICES,
    PAIR_SELECTIONS,
    ROLES,
    STRENGTHS,
    Annotator,
    ControlPair,
    Job,
    Judgment,
    Lease,
    LoginSession,
    Pair,
    PolicyVersion,
    Prompt,
    RewardModelVersion,
    Sample,
    Skip,
    TrainingLog,
    utcnow,
)
from storage.users import (
    UserError,
    authenticate,
    check_password,
    count_annotators,
    create_annotator,
    get_annotator,
    hash_password,
    list_annotators,
    set_active,
    set_password,
)
from storage.versions import (
    add_policy_version,
    add_reward_model_version,
    current_policy,
    current_reward_model,
    ensure_base_policy,
    get_policy,
    list_policies,
    list_reward_models,
    update_policy_metrics,
)

__all__ = [name for name in dir() if not name.startswith("_")]
