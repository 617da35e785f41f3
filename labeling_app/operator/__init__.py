"""The operator console: live status and users (`status`), the dashboard with quality figures, rounds table and
training curves (`dashboard`, `quality`, `rounds`), the buttons that start rounds, evaluation batches, sampling and
exports (`controls`, with the export's zip staging in `actions`), supervised fine-tuning (`sft`), the reward
functions and each reward component's curves (`rewards`), AI judges with their figures and runs (`judges`), imported
systems and the leaderboard (`leaderboard`), two versions' answers side by side (`try_it`) and beside them the best
of N sampled answers ranked by a scorer (`best_of_n`), accounts (`accounts`), each version's evidence, the
over-optimization chart and Rollback (`evidence`), and the console's own Gradio app (served at `/operator/`) with its
role-checked event wiring (`page`). Shared render helpers and the per-event operator check live in `common`. Every
action goes through `rlhf_core.service`.
"""
