"""The errors a person can act on: the CLI prints their message in one line instead of a traceback.

Imported only when an error happened, so that `rlhf --help` does not pay for torch.
"""

from __future__ import annotations

import functools


@functools.cache
def user_errors() -> tuple[type[BaseException], ...]:
    from rlhf_core.config import ConfigError
    from rlhf_core.data.file_checks import InputFileError
    from rlhf_core.data.prompt_files import PromptFileError
    from rlhf_core.workspace import WorkspaceError
    from storage import DatabaseError, JobError, JudgmentError, UserError

    errors: list[type[BaseException]] = [ConfigError, PromptFileError, InputFileError, WorkspaceError, DatabaseError,
                                         JudgmentError, UserError, JobError]
    from rlhf_core.data.export import ExportError
    from rlhf_core.data.leaderboard import LeaderboardError
    from rlhf_core.loop.gold import GoldPreferenceError
    from rlhf_core.loop.simulate import SimulationError

    errors += [ExportError, GoldPreferenceError, SimulationError, LeaderboardError]
    try:
        from rlhf_core.loop.playground import VersionChoiceError
        from rlhf_core.model_export.request import ModelExportError

        errors += [ModelExportError, VersionChoiceError]
    except ImportError:
        pass
    try:
        from rlhf_core.models.loading import ModelLoadError
        from rlhf_core.training.reward_data import NotEnoughJudgmentsError
        from rlhf_core.training.sft import NoDemonstrationsError

        errors += [ModelLoadError, NotEnoughJudgmentsError, NoDemonstrationsError]
    except ImportError:
        pass
    return tuple(errors)

