"""Every kind of thing in one table each (STYLE.md 12), on the one table class of `base`: policy
algorithms (`algorithms`), job kinds (`jobs`), import and export kinds and preference formats (`data`), gold
preferences, step golds and simulated annotator kinds (`simulation`), reward-function kinds (`rewards`), AI judge
kinds (`judges`), labeling modes and step splitters (`labeling`), best-of-N scorers (`scoring`), and entries from
outside the package (`plugins`). An entry declares its name, its help, what it needs and which module does the work
(a lazy "module:function" reference); configuration checks, the CLI's choices, the worker's dispatch, the operator
page and the docs reference read the tables and keep no list of their own. Imports nothing else of the project, so
every layer may read it.
"""

from rlhf_core.registry.algorithms import (
    POLICY_ALGORITHMS,
    Chart,
    PolicyAlgorithm,
    rollout_algorithm,
    round_algorithm,
    round_algorithms,
)
from rlhf_core.registry.base import Registry, UnknownKind, resolve, spoken_list
from rlhf_core.registry.data import (
    CSV_SUFFIXES,
    EXPORT_FORMATS,
    EXPORT_KINDS,
    FILE_SUFFIXES,
    IMPORT_KINDS,
    JSONL_SUFFIXES,
    PREFERENCE_FORMATS,
    ExportKind,
    ImportKind,
    PreferenceFormat,
    RecordSchema,
)
from rlhf_core.registry.jobs import JOB_KINDS, REQUESTERS, JobKind, training_kinds
from rlhf_core.registry.judges import JUDGE_KINDS, JUDGE_SETTINGS, JudgeKind
from rlhf_core.registry.labeling import LABELING_MODES, STEP_SPLITTERS, LabelingMode, StepSplitter
from rlhf_core.registry.plugins import PLUGINS_ENV, PluginError, load_plugins
from rlhf_core.registry.rewards import (
    REWARD_FUNCTION_KINDS,
    REWARD_MODEL_COMPONENT,
    TRL_REWARD_ARGUMENTS,
    RewardFunctionKind,
)
from rlhf_core.registry.scoring import BEST_OF_N_SCORERS, CandidateScorer
from rlhf_core.registry.simulation import CROWD_KINDS, GOLDS, STEP_GOLDS, CrowdKind, Gold, StepGold

__all__ = [name for name in dir() if not name.startswith("_")]
