"""Run by `tests/test_distributed.py`, alone or under `accelerate launch --multi_gpu --num_processes 2`: a GRPO and
then a PPO update of the tiny model on one fixed rollout, with `DataParallel()` splitting every
minibatch among the processes. The main process writes the update metrics (JSON) and the trained
adapters (safetensors), which the test compares between one and two processes.

    python tests/dp_update_job.py MODEL_DIR OUT_DIR
"""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

import torch
from safetensors.torch import save_file

from rlhf_core.config import PolicyConfig
from rlhf_core.models.stack import ModelStack
from rlhf_core.training.distributed import DataParallel
from rlhf_core.training.grpo import grpo_update
from rlhf_core.training.ppo import fresh_critic, make_optimizer, ppo_update
from rlhf_core.training.rollout import generate_rollout, rollout_logprobs

PROMPTS = [[{"role": "user", "content": f"tell me about topic {i}"}] for i in range(5)]


def main(model_dir: Path, out: Path) -> None:
    dp = DataParallel()
    torch.set_num_threads(1)
    stack = ModelStack.load(model_dir, device="cpu")
    cfg = replace(PolicyConfig(), minibatch_size=4, update_epochs=2, learning_rate=1e-3, group_size=2,
                  max_new_tokens=6, kl_beta=0.05)
    torch.manual_seed(1)  # every process samples the same whole rollout: the "same data"
    rollout = generate_rollout(stack, PROMPTS, samples_per_prompt=cfg.group_size, max_new_tokens=cfg.max_new_tokens,
                               temperature=1.0)
    half = len(stack.tokenizer) // 2
    scores = torch.tensor([sum(t < half for t in ids) / max(1, len(ids)) for ids in rollout.response_ids])
    metrics = {}
    for algo, update in (("grpo", grpo_update), ("ppo", ppo_update)):
        if algo == "ppo":
            fresh_critic(stack)
        adapters = ("policy", "value") if algo == "ppo" else ("policy",)
        optimizer = make_optimizer(stack, adapters, cfg)
        logprobs = rollout_logprobs(stack, rollout, cfg.minibatch_size)
        metrics[algo] = update(stack, rollout, scores, cfg, optimizer, logprobs=logprobs, dp=dp,
                               generator=torch.Generator().manual_seed(3))
        stack.freeze_adapters()
    if dp.is_main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "metrics.json").write_text(json.dumps(metrics))
        weights = {f"{name}.{i}": p.detach().clone().contiguous()
                   for name in ("policy", "value") for i, p in enumerate(stack.trainable_parameters(name))}
        stack.freeze_adapters()
        save_file(weights, str(out / "adapters.safetensors"))
    dp.barrier()


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
