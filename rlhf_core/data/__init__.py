"""Data in and out of a project, no model needed. In: the one reader of import files (`records`: JSONL, CSV
or a `datasets` directory, checked strictly by `file_checks`) and each import kind's parser and importer
(`prompt_files`, `control_files`, `pair_files`, `preference_files`, `demonstration_files`; the kinds are the
registry's). Out: judged pairs as TRL-ready preference datasets (`export`, with its dataset card `export_card`)
and demonstrations in TRL's SFT format (`demonstration_files`). Views over the judgments: each annotator's
control accuracy and agreement (`annotator_quality`) and the arena-style systems leaderboard (`leaderboard`).
The built-in prompt sets ship as JSONL files in this folder (`demo_prompts.jsonl`, `demo_eval_prompts.jsonl`).
Responses cut into steps and the rules of step labels (`steps`); step labels out in TRL's stepwise
format (`step_export`).
"""
