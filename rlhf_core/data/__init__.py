"""Data in and out of a project: reading prompt files (JSONL, CSV, a `datasets` directory) with
errors that name the line (`prompt_files`, with the strict checks of `file_checks`), importing
control pairs (`control_files`), each annotator's control accuracy and agreement and who falls below
the minimum (`annotator_quality`), exporting judged pairs as TRL-ready preference datasets with a
dataset card (`export`), demonstrations in and out in TRL's SFT formats (`demonstration_files`), and the
built-in prompt sets shipped as JSONL files in this folder
(`demo_prompts.jsonl`, `demo_eval_prompts.jsonl`). Needs no model.
"""
