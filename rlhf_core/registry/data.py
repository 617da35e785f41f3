"""Data in and out: import kinds (prompts, controls, pairs, preferences, demonstrations) and export kinds
(preferences, demos, steps). One entry each; the action service, the CLI's commands and help, the operator page's
upload boxes and the docs read these tables.

Every import kind is read by one reader (`data.records`: JSONL, CSV with a header, or a `datasets`
directory) against its entry's schema, then parsed record by record by its module's `importer`:

    importer(db, path, *, config, imported_by, source, options) -> data.records.ImportOutcome

which reads the whole file first and writes in one transaction (a bad record refuses the file).
An export kind's `writer(db, out, *, config, fmt, options) -> data.records.ExportOutcome` writes a dataset
in one of `EXPORT_FORMATS`.
"""

from __future__ import annotations

from dataclasses import dataclass

from rlhf_core.registry.base import Registry

# What one reader accepts: JSON Lines (a `.json` file is read as JSON Lines too), CSV, or a directory saved
# by `datasets.save_to_disk`. Upload boxes offer the file suffixes.
JSONL_SUFFIXES = (".jsonl", ".ndjson", ".json")
CSV_SUFFIXES = (".csv",)
FILE_SUFFIXES = (*JSONL_SUFFIXES, *CSV_SUFFIXES)
EXPORT_FORMATS = ("hf", "jsonl", "parquet")  # datasets.save_to_disk, JSON Lines, Parquet


@dataclass(frozen=True)
class RecordSchema:
    """The fields of one record: a prompt (`prompt` text or `messages`, unless `prompt` is False), the
    `required` fields (CSV: required columns), `optional` ones, and CSV cells that hold JSON. A `datasets`
    directory's "train" split is read, or every split with `all_splits`."""

    required: tuple[str, ...] = ()
    optional: tuple[str, ...] = ()
    json_cells: tuple[str, ...] = ("messages",)
    prompt: bool = True
    all_splits: bool = False

    def describe(self) -> str:
        parts = (["prompt (or messages)"] if self.prompt else []) + list(self.required)
        text = ", ".join(parts)
        return text + (f"; optional {', '.join(self.optional)}" if self.optional else "")


@dataclass(frozen=True)
class ImportKind:
    name: str
    help: str
    command: str  # `rlhf <command> import FILE`
    schema: RecordSchema
    importer: str  # "module:function" (see the module docstring)
    audit_action: str  # the audit log's action for it, the same from the CLI and the page


IMPORT_KINDS: Registry[ImportKind] = Registry("import kind", [
    ImportKind("prompts", "prompts to sample responses for (train split, or eval for policy-vs-base pairs); other "
                          "fields (answer, tests, ...) are kept as columns for reward functions",
               "prompts", RecordSchema(), "rlhf_core.data.prompt_files:import_prompt_file", "prompts_import"),
    ImportKind("controls", "control pairs: two responses and the known answer, mixed into annotators' pairs",
               "controls", RecordSchema(required=("response_a", "response_b", "expected")),
               "rlhf_core.data.control_files:import_control_file", "import_controls"),
    ImportKind("pairs", "other systems' responses, judged like sampled pairs (k judgments each)", "pairs",
               RecordSchema(required=("response_a", "response_b"), optional=("system_a", "system_b", "metadata"),
                            json_cells=("messages", "metadata")),
               "rlhf_core.data.pair_files:import_pair_file", "pairs_import"),
    ImportKind("preferences", "prior judgments from an existing preference dataset (reward training only)",
               "preferences", RecordSchema(required=("chosen", "rejected"), optional=("prompt",), json_cells=(),
                                           prompt=False),
               "rlhf_core.data.preference_files:import_preference_file", "preferences_import"),
    ImportKind("demonstrations", "good answers for supervised fine-tuning (TRL's SFT formats)", "demos",
               RecordSchema(optional=("completion",), all_splits=True),
               "rlhf_core.data.demonstration_files:import_demonstration_file", "demos_import"),
])


@dataclass(frozen=True)
class ExportKind:
    name: str  # `rlhf export --what NAME`
    help: str
    writer: str  # "module:function"
    options: tuple[str, ...]  # the writer's options (CLI flags); the others are refused for this kind


# Options every export kind takes.
COMMON_EXPORT_OPTIONS = ("test_fraction", "standard", "overwrite", "anonymize")

EXPORT_KINDS: Registry[ExportKind] = Registry("export kind", [
    ExportKind("preferences", "judged pairs as a TRL preference dataset (prompt / chosen / rejected)",
               "rlhf_core.data.export:write_preference_export",
               (*COMMON_EXPORT_OPTIONS, "round", "min_agreement", "include_ties", "min_annotator_accuracy",
                "include_prior", "exclude_ai")),
    ExportKind("demos", "demonstrations as a TRL SFT dataset (prompt / completion)",
               "rlhf_core.data.demonstration_files:write_demonstration_export", COMMON_EXPORT_OPTIONS),
    ExportKind("steps", "step labels in TRL's stepwise-supervision format (prompt / completions / labels)",
               "rlhf_core.data.step_export:write_step_export", ("test_fraction", "overwrite", "anonymize")),
])


@dataclass(frozen=True)
class PreferenceFormat:
    """A form of existing preference datasets (`rlhf preferences import --format`): which records it reads
    (`matches(record) -> bool`, tried in table order by --format auto) and how (`parse(record, where, max
    prompt characters) -> PriorSpec`), both in `rlhf_core.data.preference_files`."""

    name: str
    help: str
    matches: str
    parse: str


PREFERENCE_FORMATS: Registry[PreferenceFormat] = Registry("preference format", [
    PreferenceFormat("conversational", "TRL conversational: chosen/rejected message lists (prompt optional)",
                     "rlhf_core.data.preference_files:is_conversational",
                     "rlhf_core.data.preference_files:parse_conversational"),
    PreferenceFormat("standard", "TRL standard: prompt, chosen, rejected strings",
                     "rlhf_core.data.preference_files:is_standard", "rlhf_core.data.preference_files:parse_standard"),
    PreferenceFormat("hh", "Anthropic HH: chosen/rejected full transcripts, shared beginning = prompt",
                     "rlhf_core.data.preference_files:is_hh", "rlhf_core.data.preference_files:parse_hh"),
])
