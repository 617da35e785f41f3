"""The operator tab of the labeling app: live status and users (`status`), the dashboard with
quality figures, rounds table and training curves (`dashboard`, `quality`, `rounds`), the buttons
that start rounds, evaluation batches, sampling and exports (`controls`, `actions`), and the tab's
layout and role-checked event wiring (`page`). Shared render helpers live in `common`.
"""
