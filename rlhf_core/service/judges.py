"""AI judges, from `rlhf judge ...` and the operator page alike: add one (its settings checked for its kind, one
line when they cannot work), disable or enable one, and request a run (a `judge` job through `service.jobs`, with
the job kind's refusal rules). Each change writes one audit row; an audit row names the key's environment
variable, never a key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rlhf_core.judges.settings import JudgeConfigError, check_settings, read_rubric
from rlhf_core.service.actor import ActionRefused, Actor, audit
from rlhf_core.service.jobs import request_job
from rlhf_core.workspace import Workspace
from storage import Database, Job, JudgeError, JudgeRow, create_judge, set_judge_active


def add_judge(db: Database, name: str, kind: str, actor: Actor, *, base_url: str | None = None,
              model: str | None = None, api_key_env: str | None = None, rubric: str | Path | None = None
              ) -> JudgeRow:
    """Add judge `name` of `kind` (rlhf_core.registry.JUDGE_KINDS); ActionRefused with one line when a setting
    does not fit the kind or cannot work. The rubric file's text is stored with the judge."""
    try:
        settings = check_settings(kind, {"base_url": base_url, "model": model, "api_key_env": api_key_env,
                                         "rubric": None if rubric is None else str(rubric)})
        text = read_rubric(settings.pop("rubric", None))
        judge = create_judge(db, name or "", kind, settings, text)
    except (JudgeConfigError, JudgeError) as exc:
        raise ActionRefused(str(exc)) from None
    audit(db, actor, "judge_add", judge=judge.name, kind=kind, **settings, rubric=str(rubric) if rubric else "default")
    return judge


def set_judge_enabled(db: Database, name: str, active: bool, actor: Actor) -> None:
    """Disable (or enable) a judge: its judgments stay and keep counting; it takes no more runs."""
    try:
        set_judge_active(db, name, active)
    except JudgeError as exc:
        raise ActionRefused(str(exc)) from None
    audit(db, actor, "judge_enable" if active else "judge_disable", judge=name)


def request_judge_run(ws: Workspace, db: Database, name: str, actor: Actor, *, pairs: int | None = None,
                      max_requests: int | None = None) -> Job:
    """Queue a run of judge `name` on up to `pairs` pairs in at most `max_requests` requests."""
    params: dict[str, Any] = {"judge": name, "pairs": pairs, "max_requests": max_requests}
    return request_job(ws, db, "judge", params, actor)
