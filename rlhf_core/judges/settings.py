"""A judge's settings as `rlhf judge add` takes them, and their checks: the ones its kind needs and takes
(`rlhf_core.registry.JUDGE_KINDS`), then the kind's own (`check`), each failure one sentence. An API key is never a
setting: a judge stores the NAME of the environment variable that holds it."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from rlhf_core.registry import JUDGE_KINDS, JUDGE_SETTINGS, UnknownKind, resolve, spoken_list

ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
MAX_RUBRIC_CHARS = 20_000


class JudgeConfigError(ValueError):
    """A judge's settings cannot work; the message is one sentence saying what to change."""


def check_settings(kind: str, settings: dict[str, Any]) -> dict[str, Any]:
    """The settings given (None and "" left out), checked for `kind`; JudgeConfigError otherwise."""
    try:
        spec = JUDGE_KINDS.require(kind)
    except UnknownKind as exc:
        raise JudgeConfigError(str(exc)) from None
    given = {k: v for k, v in settings.items() if v not in (None, "")}
    if foreign := [k for k in given if k not in spec.takes]:
        flags = spoken_list([JUDGE_SETTINGS.get(k, k) for k in foreign], "and")
        raise JudgeConfigError(f"{flags} {'does' if len(foreign) == 1 else 'do'} not apply to a judge of kind {kind} "
                               f"(it takes {spoken_list([JUDGE_SETTINGS[k] for k in spec.takes], 'and')})")
    if missing := [k for k in spec.needs if k not in given]:
        flags = spoken_list([JUDGE_SETTINGS[k] for k in missing], "and")
        raise JudgeConfigError(f"a judge of kind {kind} needs {flags}")
    resolve(spec.check)(given)
    return given


def read_rubric(path: str | Path | None) -> str | None:
    """The text of a rubric file (stored with the judge, so a worker elsewhere reads the same), or None."""
    if path is None:
        return None
    path = Path(path).expanduser()
    try:
        text = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise JudgeConfigError(f"cannot read the rubric {path}: {exc.__class__.__name__}; give a UTF-8 text "
                               "file") from None
    if not text or len(text) > MAX_RUBRIC_CHARS:
        raise JudgeConfigError(f"the rubric {path} must hold 1 to {MAX_RUBRIC_CHARS} characters of text")
    return text


def check_env_name(name: str) -> None:
    """An environment variable's NAME. Its value is never echoed: a key pasted here by mistake stays unprinted."""
    if not ENV_NAME.fullmatch(name):
        raise JudgeConfigError("--api-key-env takes the NAME of an environment variable that holds the key (such as "
                               "OPENAI_API_KEY), never the key itself")


def api_key(judge: str, settings: dict[str, Any]) -> str | None:
    """The key from the environment variable the judge names (None when it names none)."""
    name = settings.get("api_key_env")
    if not name:
        return None
    key = os.environ.get(name)
    if not key:
        from rlhf_core.judges.verdicts import JudgeUnavailable

        raise JudgeUnavailable(f"judge {judge!r}: the environment variable {name} is not set where the worker runs; "
                               "export the API key there")
    return key


def display_url(url: str) -> str:
    """An endpoint as messages show it: scheme, host, port and path, never user:password@."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    return f"{parts.scheme}://{host}{f':{parts.port}' if parts.port else ''}{parts.path}"


def check_model_dir(value: str, what: str) -> Path:
    path = Path(value).expanduser()
    if not (path / "config.json").is_file():
        problem = "does not exist" if not path.exists() else "has no config.json"
        raise JudgeConfigError(f"--model {path} {problem}: give a local Hugging Face {what} directory")
    return path.resolve()
