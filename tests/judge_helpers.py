"""Shared by the judge tests: a workspace on a test database, pairs with a known better side, a judge on the
simulated OpenAI-compatible endpoint."""

from __future__ import annotations

from pathlib import Path

import storage
from rlhf_core.config import dump_config
from rlhf_core.workspace import Workspace, init_workspace

KEY_ENV = "RLHF_TEST_JUDGE_KEY"
SECRET = "sk-test-0123456789-never-stored"


def workspace(root: Path, **judges: object) -> Workspace:
    """A workspace whose `[judges]` settings are quick for tests (no waits), plus `judges` overrides."""
    ws, _ = init_workspace(root)
    ws.config.judges.requests_per_second = 1000.0
    ws.config.judges.backoff_seconds = 0.0
    ws.config.judges.retries = 1
    ws.config.judges.timeout_seconds = 5.0
    for key, value in judges.items():
        setattr(ws.config.judges, key, value)
    ws.config_path.write_text(dump_config(ws.config))
    return ws


def seed_pairs(db: storage.Database, n: int, *, k: int = 1, controls: int = 0) -> list[int]:
    """`n` open pairs whose longer response is the better one (the simulated endpoint's default gold), sides at
    random, and `controls` control pairs with the longer one expected; returns the training pairs' ids."""
    import random

    rng = random.Random(7)
    storage.add_prompts(db, [[{"role": "user", "content": f"tell me about thing {i}"}] for i in range(n)])
    ids = []
    for prompt in storage.list_prompts(db)[-n:]:
        short, long = f"ok {prompt.id}", f"here is a much longer and fuller answer about thing {prompt.id}"
        responses = [(short, 2), (long, 12)] if rng.random() < 0.5 else [(long, 12), (short, 2)]
        ids += [p.id for p in storage.record_generations(db, prompt_id=prompt.id, policy_version_id=0,
                                                         responses=responses, gen_params={}, pairs=[(0, 1)],
                                                         judgments_wanted=k)]
    if controls:
        storage.add_control_pairs(db, [storage.ControlSpec([{"role": "user", "content": f"control {i}"}],
                                                           "a long and careful answer to it", "no", "a")
                                       for i in range(controls)])
    return ids
