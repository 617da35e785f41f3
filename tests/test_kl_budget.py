"""policy.kl_budget: a KL budget to a fixed reference spread over rounds (training/policy.kl_budget_share), by
hand; on by default."""

from __future__ import annotations

import pytest

from rlhf_core.config import Config, ConfigError, PolicyConfig, validate
from rlhf_core.training.policy import kl_budget_share


def test_each_round_gets_its_share_of_the_budget():
    cfg = PolicyConfig(kl_budget=0.1, kl_budget_rounds=3)
    # Round r of 3 may reach 0.1·r/3 nats/token from the base; from round 3 on, the whole budget.
    assert [kl_budget_share(cfg, r)["max_kl_per_token"] for r in (1, 2, 3, 5)] == pytest.approx(
        [0.1 / 3, 0.2 / 3, 0.1, 0.1])
    assert "target_kl" not in kl_budget_share(cfg, 1)  # the fixed controller keeps its β
    adaptive = PolicyConfig(kl_budget=0.1, kl_budget_rounds=2, kl_control="adaptive", max_kl_per_token=0.04)
    assert kl_budget_share(adaptive, 2) == pytest.approx({"max_kl_per_token": 0.04, "target_kl": 0.1})
    assert kl_budget_share(PolicyConfig(kl_budget=0.0), 1) == {}  # no budget: the round's settings stay
    assert kl_budget_share(PolicyConfig(), 3) == {"max_kl_per_token": pytest.approx(0.08)}  # the default's


def test_the_budget_is_to_a_fixed_reference():
    config = Config()
    for reference in ("base", "sft", "2"):
        config.policy.reference = reference
        validate(config)
    config.policy.kl_budget, config.policy.reference = 0.1, "previous"
    with pytest.raises(ConfigError, match="policy.kl_budget bounds the total drift to a fixed reference"):
        validate(config)
    config.policy.reference, config.policy.kl_budget_rounds = "base", 0
    with pytest.raises(ConfigError, match="kl_budget_rounds at least 1"):
        validate(config)


def test_the_stop_reads_the_exact_kl_where_there_is_one_else_k3() -> None:
    from rlhf_core.training.rollout import stop_kl
    assert stop_kl({"kl_k3_per_token": 0.09, "kl_exact_per_token": 0.03}) == 0.03
    assert stop_kl({"kl_k3_per_token": 0.09, "kl_exact_per_token": 0.0}) == 0.0  # 0 is a figure, not a gap
    assert stop_kl({"kl_k3_per_token": 0.09}) == 0.09
