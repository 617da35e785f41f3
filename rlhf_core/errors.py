"""The errors a person can act on: the CLI prints their message in one line instead of a traceback."""

from __future__ import annotations


def _user_errors() -> tuple[type[BaseException], ...]:
    from rlhf_core.config import ConfigError
    from rlhf_core.prompt_files import PromptFileError
    from rlhf_core.workspace import WorkspaceError
    from storage import DatabaseError, JobError, JudgmentError, UserError

    errors: list[type[BaseException]] = [ConfigError, PromptFileError, WorkspaceError, DatabaseError,
                                         JudgmentError, UserError, JobError]
    try:
        from rlhf_core.modeling import ModelLoadError

        errors.append(ModelLoadError)
    except ImportError:
        pass
    return tuple(errors)


USER_ERRORS = _user_errors()
