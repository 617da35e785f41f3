"""The errors a person can act on: the CLI prints their message in one line instead of a traceback.

Imported only when an error happened, so that `rlhf --help` does not pay for torch.
"""

from __future__ import annotations

import functools
import sys

# Errors of modules that pull in torch, peft or bitsandbytes (whose import prints a warning): named here and
# looked up among the modules already imported, since an error raised by one means its module is loaded.
HEAVY_ERRORS = (
    ("rlhf_core.models.loading", "ModelLoadError"),
    ("rlhf_core.training.reward_data", "NotEnoughJudgmentsError"),
    ("rlhf_core.training.sft", "NoDemonstrationsError"),
    ("rlhf_core.service.playground", "VersionChoiceError"),
    ("rlhf_core.model_export.request", "ModelExportError"),
    ("rlhf_core.service.rewards_check", "RewardsCheckError"),
    ("rlhf_core.service.best_of_n", "BestOfNError"),
    ("rlhf_core.training.prm_service", "NoStepLabelsError"),
    ("rlhf_core.training.publish", "VersionWriteError"),
)


def user_errors() -> tuple[type[BaseException], ...]:
    """The error types the CLI prints as one line: the light ones, and those of the heavy modules loaded."""
    loaded = (getattr(sys.modules.get(module), name, None) for module, name in HEAVY_ERRORS)
    return light_user_errors() + tuple(error for error in loaded if error is not None)


@functools.cache
def light_user_errors() -> tuple[type[BaseException], ...]:
    from rlhf_core.config import ConfigError
    from rlhf_core.data.file_checks import InputFileError
    from rlhf_core.data.prompt_files import PromptFileError
    from rlhf_core.workspace import WorkspaceError
    from storage import DatabaseError, JobError, JudgeError, JudgmentError, UserError

    errors: list[type[BaseException]] = [ConfigError, PromptFileError, InputFileError, WorkspaceError, DatabaseError,
                                         JudgmentError, UserError, JobError, JudgeError]
    from rlhf_core.data.export import ExportError
    from rlhf_core.data.leaderboard import LeaderboardError
    from rlhf_core.ops import OpsError
    from rlhf_core.registry import PluginError, UnknownKind
    from rlhf_core.rewards import RewardFunctionError
    from rlhf_core.service.actor import ActionRefused
    from rlhf_core.simulator.gold import GoldPreferenceError
    from rlhf_core.simulator.simulate import SimulationError

    errors += [ExportError, GoldPreferenceError, SimulationError, LeaderboardError, ActionRefused, UnknownKind,
               PluginError, RewardFunctionError, OpsError]
    return tuple(errors)

