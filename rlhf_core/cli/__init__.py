"""The `rlhf` command line, one module per noun: `app` (the typer app and the options every command shares), `project`
(init, status, leaderboard), `imports` (`rlhf <kind> import` for every import kind), `users` (accounts and the audit
log), `jobs` (sampling, training, rounds, evaluation batches, the job list), `serve` (the app and the worker),
`judges` (AI judges), `exports` (datasets), `simulation` (simulated annotators, the demo), `models` (export a
version, generate), `rewards` (`rlhf rewards check`: the reward functions beside the reward model), `steps` (step
labels and the process reward model: train-prm, simulate-steps), `quickstart`, `ops` (backup, restore, doctor),
`errors` (what prints as one line) and `main` (the console script). Commands go through the action service
(`rlhf_core.service`) where the operator page offers the same action. The CLI is the only part of rlhf_core that
may import `labeling_app`; commands import what they need inside the function, so `rlhf --help` stays fast.
"""

from rlhf_core.cli.main import main

__all__ = ["main"]
