"""The tables of kinds: one entry is all a new kind takes. A toy policy algorithm registered from outside the package
(tests/toy_algorithm.py) is accepted by the configuration check, offered by the CLI, dispatched by the worker and
trained, and (tests/test_operator_registries.py) shown by the operator page."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import storage
from rlhf_core.config import Config, ConfigError, validate
from rlhf_core.loop.worker import Worker
from rlhf_core.registry import (
    JOB_KINDS,
    POLICY_ALGORITHMS,
    Registry,
    UnknownKind,
    load_plugins,
    resolve,
    round_algorithms,
)
from rlhf_core.simulator.simulate import simulate_annotators
from rlhf_core.workspace import init_workspace

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent


@pytest.fixture
def toy():
    import toy_algorithm

    with POLICY_ALGORITHMS.registered(toy_algorithm.TOY) as entry:
        yield entry


def test_registry_lists_what_it_knows_and_restores_after_a_temporary_entry() -> None:
    table: Registry = Registry("widget")
    with pytest.raises(UnknownKind, match=r"unknown widget 'x' \(known: none\)"):
        table.require("x")
    with pytest.raises(TypeError):
        table.add(object())
    assert resolve("rlhf_core.registry.base:spoken_list")(["a", "b", "c"]) == "a, b or c"
    with pytest.raises(ValueError, match="package.module:attribute"):
        resolve("no-colon")
    assert "toy" not in POLICY_ALGORITHMS


def test_every_entry_points_at_code_that_exists() -> None:
    for algo in POLICY_ALGORITHMS.values():
        assert callable(resolve(algo.trainer)), algo.name
        assert (algo.update is None) == (not algo.uses_rollouts), algo.name
        if algo.update:
            assert callable(resolve(algo.update)), algo.name
        assert {c.key for c in algo.charts} <= set(algo.step_keys), algo.name
    for kind in JOB_KINDS.values():
        for ref in (kind.run, kind.follow, kind.refuse):
            assert ref is None or callable(resolve(ref)), kind.name


def test_a_toy_algorithm_is_accepted_by_validation_only_while_registered(toy) -> None:  # noqa: ANN001
    config = Config()
    config.policy.algo = "toy"
    validate(config)
    assert round_algorithms()[-1] == "toy"
    config.policy.algo = "nope"
    with pytest.raises(ConfigError, match="policy.algo must be ppo, grpo, dpo or toy"):
        validate(config)


def _rlhf(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "RLHF_PLUGINS": "toy_algorithm",
           "PYTHONPATH": os.pathsep.join([str(TESTS), str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "rlhf_core", *args], capture_output=True, text=True, env=env,
                          timeout=120, cwd=ROOT)


def test_a_plugin_algorithm_is_offered_by_the_cli(tmp_path: Path) -> None:
    help_text = _rlhf("round", "--help").stdout
    assert "toy" in help_text and "ppo, grpo, dpo or toy" in " ".join(help_text.split())
    ws = tmp_path / "ws"
    assert _rlhf("init", "-w", str(ws)).returncode == 0
    bad = _rlhf("round", "--algo", "nope", "-w", str(ws))
    assert bad.returncode == 2 and "must be ppo, grpo, dpo or toy" in " ".join(bad.stderr.split())
    refused = _rlhf("round", "--algo", "toy", "-w", str(ws))  # accepted as a choice; refused by the round's rule
    assert refused.returncode == 1 and refused.stderr.strip() == (
        "error: No judgments yet: a round trains the reward model on judged pairs, so collect some first.")
    assert "toy" not in POLICY_ALGORITHMS  # the subprocess's plugin did not leak into this process
    missing = subprocess.run([sys.executable, "-m", "rlhf_core", "status", "-w", str(ws)], capture_output=True,
                             text=True, env={**os.environ, "RLHF_PLUGINS": "no_such_plugin_module"}, timeout=120)
    assert missing.returncode == 1 and "RLHF_PLUGINS names 'no_such_plugin_module'" in missing.stderr
    assert "Traceback" not in missing.stderr
    assert load_plugins(" , ") == []


def test_the_worker_trains_a_toy_version(toy, tmp_path: Path, tiny_model_dir: Path, tiny_rounds) -> None:  # noqa: ANN001
    ws, _ = init_workspace(tmp_path / "ws", model=str(tiny_model_dir))
    tiny_rounds(ws.config)
    db = ws.database()
    storage.add_prompts(db, [[{"role": "user", "content": f"say something about item {i}"}] for i in range(10)])
    worker = Worker(ws, db, poll_seconds=0.01)
    assert worker.run_until_done(storage.enqueue_job(db, "sample", {"pairs": 10}).id, timeout=300).status == "done"
    simulate_annotators(db, annotators=2, judgments=10, gold="longer", seed=1, progress=False)
    done = worker.run_until_done(storage.enqueue_job(db, "round", {"algo": "toy"}).id, timeout=600)
    assert done.status == "done", done.error
    version = storage.list_policies(db)[-1]
    assert (version.algorithm, version.round) == ("toy", 1)
    steps = [r for r in storage.training_logs(db, job_id=done.id) if r["phase"] == "policy"]
    assert len(steps) == ws.config.policy.steps and all("zero_advantage_groups" in r for r in steps)
    assert json.loads(version.metrics_json)["steps"] == ws.config.policy.steps
    db.dispose()
