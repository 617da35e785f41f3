"""The `rlhf` command line, split by command group: `app` (the typer app and the shared
`--workspace`/`--db` options), `project` (init, status, prompts, users), `loop` (sampling, training,
rounds, jobs, the worker and `serve`), `data` (simulate, export, demo) and `main` (the console
script). The CLI is the only part of rlhf_core that may import `labeling_app`; commands import
what they need inside the function, so `rlhf --help` stays fast.
"""

from rlhf_core.cli.main import main

__all__ = ["main"]
