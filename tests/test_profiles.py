"""Machine profiles (`rlhf init --profile`) and the duration estimate printed before long work."""

from __future__ import annotations

import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from rlhf_core.config import PROFILES, Config, ConfigError, apply_profile, load_config, resolve_profile
from storage import claim_next_job, enqueue_job, finish_job, utcnow


def rlhf(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "rlhf_core", *args], capture_output=True, text=True, timeout=120)
    if check:
        assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def test_profile_selection_writes_the_expected_settings(tmp_path: Path) -> None:
    rlhf("init", "-w", str(tmp_path / "cpu"), "--profile", "cpu")
    config = load_config(tmp_path / "cpu" / "rlhf.toml")
    assert config.profile == "cpu"
    for section, values in PROFILES["cpu"].items():
        for key, value in values.items():
            assert getattr(getattr(config, section), key) == value, (section, key)
    assert config.sampling.batch_size == 32 and config.policy.max_new_tokens == 48

    out = rlhf("init", "-w", str(tmp_path / "cpu"), "--profile", "gpu").stdout
    assert "profile gpu written" in out
    rewritten = load_config(tmp_path / "cpu" / "rlhf.toml")
    assert rewritten.profile == "gpu" and rewritten.sampling.batch_size == PROFILES["gpu"]["sampling"]["batch_size"]
    assert rewritten.database_url == config.database_url  # everything else kept

    bad = rlhf("init", "-w", str(tmp_path / "x"), "--profile", "huge", check=False)
    assert bad.returncode != 0 and "auto, cpu or gpu" in bad.stderr + bad.stdout
    assert not (tmp_path / "x").exists()


def test_auto_profile_follows_the_hardware() -> None:
    import torch

    assert resolve_profile("auto") == ("gpu" if torch.cuda.is_available() else "cpu")
    config = apply_profile(Config(), "cpu")
    assert config.reward.epochs == PROFILES["cpu"]["reward"]["epochs"]
    with pytest.raises(ConfigError, match="unknown profile"):
        resolve_profile("laptop")


def test_expected_duration_comes_from_the_last_job_of_the_kind(sqlite_db) -> None:
    from rlhf_core.cli.jobs import expected_duration

    assert "No earlier run" in expected_duration(sqlite_db, "round")
    job = enqueue_job(sqlite_db, "round", {})
    claim_next_job(sqlite_db, "test-worker")
    finish_job(sqlite_db, job.id, {})
    from storage import Job

    with sqlite_db.session() as s:  # a round that took four minutes
        row = s.get(Job, job.id)
        row.started_at, row.finished_at = utcnow() - timedelta(minutes=4), utcnow()
        s.add(row)
    assert expected_duration(sqlite_db, "round") == f"Expected: about 4.0 min, as the last round job (#{job.id}) took."
    assert "No earlier run" in expected_duration(sqlite_db, "train_rm")
