"""rlhf.toml: every setting survives a dump and load; bad values are refused with the key named."""

from __future__ import annotations

from pathlib import Path

import pytest

from rlhf_core.config import Config, ConfigError, apply_overrides, dump_config, load_config


def test_settings_round_trip_through_toml(tmp_path: Path) -> None:
    config = Config()
    config.policy.reference, config.policy.kl_budget = "previous", 0.0  # a moving anchor takes no budget
    config.model.release_cpu_memory = True
    config.policy.kl_beta = 0.1
    config.policy.algo, config.policy.kl_control, config.policy.loss_type = "dpo", "adaptive", "dr_grpo"
    config.policy.dpo_label_smoothing, config.policy.dpo_rm_pairs = 0.1, 16
    config.logging.dir = "tb"
    config.reward.feature_depths = [0.25, 1.0]
    path = tmp_path / "rlhf.toml"
    path.write_text(dump_config(config))
    assert load_config(path) == config


@pytest.mark.parametrize("section,line,message", [
    ("policy", 'reference = "v2"', "policy.reference must be base, previous, sft or a policy version number"),
    ("policy", 'algo = "a2c"', "policy.algo must be ppo, grpo or dpo"),
    ("policy", 'kl_control = "pid"', "policy.kl_control must be fixed or adaptive"),
    ("policy", "target_kl = 0", "policy.target_kl must be > 0"),
    ("policy", 'loss_type = "dapo"', "policy.loss_type must be grpo or dr_grpo"),
    ("policy", "dpo_label_smoothing = 0.5", "policy.dpo_label_smoothing must be at least 0 and below 0.5"),
    ("policy", "dpo_beta = 0", "policy.dpo_beta and policy.dpo_learning_rate must be > 0"),
    ("policy", "dpo_kl_every = 0", "policy.dpo_epochs, dpo_batch_size and dpo_kl_every must be at least 1"),
    ("policy", "dpo_rm_pairs = -1", "policy.dpo_past_rounds and policy.dpo_rm_pairs must be 0 or more"),
    ("reward", "feature_depths = [0, 1.5]", "reward.feature_depths must be a non-empty list of fractions"),
    ("reward", "feature_depths = []", "reward.feature_depths must be a non-empty list of fractions"),
    ("reward", "feature_depths = 1.0", "feature_depths must be list"),
    ("logging", 'report_to = "wandb"', "logging.report_to must be none or tensorboard"),
    ("model", 'quantize_4bit = "maybe"', "model.quantize_4bit must be auto, true or false"),
    ("auth", "max_failures = 0", "auth.max_failures must be between 1 and 1000"),
    ("auth", "cooldown_seconds = 0", "auth.cooldown_seconds must be between 1 and 604800"),
    ("auth", "min_password_length = 4", "auth.min_password_length must be between 8 and 1024"),
    ("labeling", "undo_seconds = -1", r"labeling.undo_seconds must be between 0 \(no undo\) and 3600"),
    ("labeling", 'truncated_advice = "ignore"', "labeling.truncated_advice must be judge_content, "
                                                "prefer_complete or skip"),
    ("reward", 'pooling = "max"', "reward.pooling must be last, mean, sum or mean\\+sum"),
    ("reward", 'annotator_model = "dawid"', "reward.annotator_model must be none, threshold or crowd_bt"),
    ("sampling", 'pair_selection = "best"', "sampling.pair_selection must be all, random or uncertainty"),
    ("model", 'precision = "fp16"', "model.precision must be auto, bf16 or fp32"),
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


def test_whole_numbers_in_a_list_of_fractions_load_as_floats(tmp_path: Path) -> None:
    path = tmp_path / "rlhf.toml"
    path.write_text("[reward]\nfeature_depths = [0, 0.5, 1]\n")
    assert load_config(path).reward.feature_depths == [0.0, 0.5, 1.0]


def test_benchmark_overrides_parse_each_type_and_are_validated() -> None:
    config = Config()
    apply_overrides(config, ["reward.feature_depths=0,0.5,1", "reward.warm_start=true", "reward.epochs=4",
                             "policy.kl_beta=0.2"])
    assert config.reward.feature_depths == [0.0, 0.5, 1.0]
    assert (config.reward.warm_start, config.reward.epochs, config.policy.kl_beta) == (True, 4, 0.2)
    with pytest.raises(ConfigError, match="no setting 'reward.depth'"):
        apply_overrides(config, ["reward.depth=1"])
    with pytest.raises(ConfigError, match="reward.feature_depths must be"):
        apply_overrides(config, ["reward.feature_depths=2"])


def test_every_closed_set_of_values_is_checked_from_its_declaration(tmp_path: Path) -> None:
    """Each key that declares allowed values accepts each of them and refuses anything else, naming the file, the
    key and every allowed value: no key's check is written by hand, and none is missing."""
    from rlhf_core.config import declared_settings

    closed = [s for s in declared_settings(Config) if s.allowed is not None]
    assert {"model.quantize_4bit", "policy.algo", "labeling.truncated_advice", "reward.ties"} <= {s.key for s in closed}
    path = tmp_path / "rlhf.toml"
    for s in closed:
        for value in s.allowed:
            path.write_text(f'[{s.section}]\n{s.name} = "{value}"\n')
            if (s.key, value) == ("reward.ties", "davidson"):  # a rule between keys: crowd_bt models no ties
                path.write_text('[reward]\nties = "davidson"\nannotator_model = "threshold"\n')
            if (s.key, value) == ("loop.mode", "verifiable"):  # a rule between keys: it needs a reward function
                path.write_text('[loop]\nmode = "verifiable"\n[[reward.functions]]\nkind = "json_valid"\n')
            assert getattr(getattr(load_config(path), s.section), s.name) == value
        path.write_text(f'[{s.section}]\n{s.name} = "no-such-value"\n')
        with pytest.raises(ConfigError) as refused:
            load_config(path)
        assert str(refused.value).startswith(f"{path}: {s.key} must be ")
        assert all(value in str(refused.value) for value in s.allowed)


def test_a_plugins_algorithm_is_accepted_at_check_time() -> None:
    from rlhf_core.config import validate
    from rlhf_core.registry import POLICY_ALGORITHMS, PolicyAlgorithm

    config = Config()
    config.policy.algo = "kto"
    with pytest.raises(ConfigError, match="policy.algo must be ppo, grpo or dpo"):
        validate(config)
    plugin = PolicyAlgorithm(name="kto", help="a plugin's algorithm", trainer="plugin.kto:train",
                             needs_reward_model=False, uses_rollouts=False)
    with POLICY_ALGORITHMS.registered(plugin):
        validate(config)
