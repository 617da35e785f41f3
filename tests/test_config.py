"""rlhf.toml: every setting survives a dump and load; bad values are refused with the key named."""

from __future__ import annotations

from pathlib import Path

import pytest

from rlhf_core.config import Config, ConfigError, dump_config, load_config


def test_settings_round_trip_through_toml(tmp_path: Path) -> None:
    config = Config()
    config.policy.reference = "previous"
    config.model.release_cpu_memory = True
    config.policy.kl_beta = 0.1
    path = tmp_path / "rlhf.toml"
    path.write_text(dump_config(config))
    assert load_config(path) == config


@pytest.mark.parametrize("section,line,message", [
    ("policy", 'reference = "v2"', "policy.reference must be base, previous or a policy version number"),
    ("policy", 'algo = "dpo"', "policy.algo must be ppo or grpo"),
    ("model", 'quantize_4bit = "maybe"', "model.quantize_4bit must be auto, true or false"),
])
def test_bad_values_name_the_setting(tmp_path: Path, section: str, line: str, message: str) -> None:
    path = tmp_path / "rlhf.toml"
    path.write_text(f"[{section}]\n{line}\n")
    with pytest.raises(ConfigError, match=message):
        load_config(path)


def test_numbered_reference_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "rlhf.toml"
    path.write_text('[policy]\nreference = "3"\n')
    assert load_config(path).policy.reference == "3"
