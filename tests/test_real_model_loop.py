"""The loop on the real default model (SmolLM2-135M-Instruct), shrunk to minutes on a CPU. Slow."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

import storage
from rlhf_core.models.loading import resolve_model_dir
from rlhf_core.models.stack import ModelStack
from rlhf_core.simulator.demo import LoopSettings, prepare_workspace, run_loop
from rlhf_core.training.rollout import generate_rollout, rollout_logprobs

pytestmark = pytest.mark.slow


def test_one_round_on_the_default_model(tmp_path) -> None:
    ws = prepare_workspace(tmp_path / "demo")
    cfg = ws.config
    cfg.sampling.max_new_tokens = 24
    cfg.sampling.per_prompt = 3
    cfg.sampling.batch_size = 12
    cfg.reward.epochs = 1
    cfg.policy.steps = 1
    cfg.policy.prompts_per_step = 2
    cfg.policy.group_size = 2
    cfg.policy.max_new_tokens = 16
    cfg.policy.update_epochs = 1
    cfg.loop.min_reward_confidence = 0.0  # 18 judgments cannot show a reward model beats chance; mechanics only
    settings = LoopSettings(rounds=1, judgments_per_round=18, annotators=2, gold="sentiment", eval_prompts=6)
    (report,) = list(run_loop(ws, settings, progress=False, log=lambda _m: None))
    assert report.policy_version == 1 and report.judgments == 18
    assert report.rm_heldout_accuracy is not None and 0.0 <= report.rm_heldout_accuracy <= 1.0
    assert report.kl_per_token is not None and report.kl_per_token >= 0.0
    assert 0.0 <= report.gold_win_rate <= 1.0
    db = ws.database()
    metrics = json.loads(storage.get_policy(db, 1).metrics_json)
    assert metrics["response_length"] > 0 and metrics["entropy"] > 0
    assert storage.status_counts(db)["versions"] == {"policy": 1, "reward_model": 1}


def test_four_bit_default_model_trains_a_policy_adapter(tmp_path) -> None:
    """NF4 base on CPU: generation, reference log-probs and a LoRA backward on the real model."""
    model_dir = resolve_model_dir("default", Path(os.environ.get("RLHF_MODEL_CACHE") or tmp_path / "models"))
    stack = ModelStack.load(model_dir, quantize_4bit=True, device="cpu")
    assert stack.quantized
    prompts = [[{"role": "user", "content": "Say something kind."}]]
    rollout = generate_rollout(stack, prompts, samples_per_prompt=2, max_new_tokens=8, temperature=1.0)
    lp = rollout_logprobs(stack, rollout)
    assert torch.equal(lp.old_logp, lp.ref_logp)  # the fresh policy adapter is the identity
    params = stack.trainable_parameters("policy")
    stack.model.train()
    with stack.use("policy"):
        logp, _ = stack.token_logprobs(rollout.batch.input_ids, rollout.batch.attention_mask)
        (-(logp * rollout.batch.response_mask).sum()).backward()
    assert sum(float(p.grad.abs().sum()) for p in params if p.grad is not None) > 0
