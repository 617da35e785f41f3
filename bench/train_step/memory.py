"""Peak memory of one PPO step (rollout + update): our one base with adapters against the usual
four separate models (policy, reference, reward model, critic).

Each variant runs in its own fresh worker process (a smoke run's figures come from one shared process and
mean nothing). Both load their models and then run one step with
the same prompts, forced response length, minibatches and epochs; memory is read at the end:
CUDA: torch.cuda.max_memory_allocated (everything allocated since the process started);
CPU: peak RSS (ru_maxrss) minus the RSS right after the imports, i.e. before any model is loaded.
"""

from __future__ import annotations

import random
import resource
from contextlib import nullcontext
from typing import Any

import torch
from torch import Tensor, nn
from transformers import AutoModelForCausalLM

from bench.train_step.data import chat_prompts
from bench.train_step.settings import BenchSettings
from bench.train_step.sides import load_hf, load_stack, peft_config, synchronize, trl_bf16, trl_checkpointing
from rlhf_core.algorithms import entropy_from_logits, gather_logprobs, ppo_policy_loss, ppo_value_loss
from rlhf_core.config import PolicyConfig
from rlhf_core.models.batching import build_sequences, last_token_index, left_pad, prompt_token_ids, split_generated
from rlhf_core.models.loading import load_tokenizer
from rlhf_core.training.policy import train_policy
from rlhf_core.training.ppo import clipped_step, fresh_critic, ppo_advantages
from rlhf_core.training.rollout import RolloutLogprobs, cut, minibatch_rows, minibatches, reward_model_scores


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def current_rss_mb() -> float:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def _ppo_config(s: BenchSettings) -> PolicyConfig:
    return PolicyConfig(algo="ppo", lora_r=s.lora_r, lora_alpha=s.lora_alpha, lora_dropout=0.0,
                        learning_rate=s.policy_lr, kl_beta=s.kl_beta, clip_eps=s.clip_eps, steps=1,
                        prompts_per_step=s.rollout_size, update_epochs=s.update_epochs,
                        minibatch_size=s.minibatch_size, max_new_tokens=s.max_new_tokens,
                        temperature=s.temperature, seed=s.seed)


def _prompts(s: BenchSettings, cfg: PolicyConfig) -> list[list[dict[str, str]]]:
    # The prompts train_policy's first step draws (same seed), so both variants see the same ones.
    prompts = chat_prompts(seed=s.seed)
    return random.Random(cfg.seed).sample(prompts, min(cfg.prompts_per_step, len(prompts)))


def _start(s: BenchSettings) -> dict[str, float]:
    if s.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    return {"rss_after_imports_mb": current_rss_mb(), "peak_rss_after_imports_mb": peak_rss_mb()}


def _finish(s: BenchSettings, start: dict[str, float], after_load: tuple[float, float]) -> dict[str, Any]:
    synchronize(s.device)
    if s.device == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2**20
        method = "torch.cuda.max_memory_allocated"
    else:
        peak = peak_rss_mb() - start["rss_after_imports_mb"]
        method = "peak RSS (ru_maxrss) - RSS after imports"
    return {"peak_mb": peak, "method": method,
            "notes": {**start, "after_load_mb": after_load[0], "peak_by_end_of_load_mb": after_load[1]}}


def _loaded_mb(s: BenchSettings, start: dict[str, float]) -> tuple[float, float]:
    """Memory in use once the models are loaded, and the peak so far (loading's own high-water mark)."""
    if s.device == "cuda":
        return torch.cuda.memory_allocated() / 2**20, torch.cuda.max_memory_allocated() / 2**20
    base = start["rss_after_imports_mb"]
    return current_rss_mb() - base, peak_rss_mb() - base


def ppo_shared(s: BenchSettings) -> dict[str, Any]:
    """Ours: ModelStack (one base, adapters policy/value/reward) and one `train_policy(algo="ppo")` step."""
    start = _start(s)
    stack = load_stack(s)
    fresh_critic(stack)
    after_load = _loaded_mb(s, start)
    cfg = _ppo_config(s)
    result = train_policy(stack, chat_prompts(seed=s.seed), reward_model_scores(stack), cfg, algo="ppo",
                          progress=False)
    out = _finish(s, start, after_load)
    out["notes"]["response_tokens"] = result.history[0]["response_length"]
    return out


# --------------------------------------------------------------------------- the separate-models baseline


def _decoder(model: nn.Module) -> nn.Module:
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return getattr(base, base.base_model_prefix)


_AUTOCAST: list[torch.dtype | None] = [None]  # the separate models compute like ours: set in ppo_separate


def _autocast():  # noqa: ANN202
    dtype = _AUTOCAST[0]
    return torch.autocast(_AUTOCAST_DEVICE[0], dtype=dtype) if dtype is not None else nullcontext()


_AUTOCAST_DEVICE = ["cpu"]


def _hidden(model: nn.Module, ids: Tensor, mask: Tensor) -> Tensor:
    with _autocast():
        return _decoder(model)(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state


def _logits(model: nn.Module, ids: Tensor, mask: Tensor) -> Tensor:
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    hidden = _hidden(model, ids, mask)[:, :-1]
    with _autocast():
        return base.lm_head(hidden).float()


def _with_lora(s: BenchSettings, model: nn.Module) -> nn.Module:
    from peft import get_peft_model

    for p in model.parameters():
        p.requires_grad_(False)
    model.config.use_cache = False
    if trl_checkpointing(s):  # non-reentrant activation checkpointing, as TRL would
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return get_peft_model(model, peft_config(s, "CAUSAL_LM"))


def ppo_separate(s: BenchSettings) -> dict[str, Any]:
    """Four copies of the base: policy (+LoRA, trains), reference (frozen), reward model (frozen, + head),
    critic (+LoRA + value head, trains); then the step ours runs, model by model."""
    start = _start(s)
    torch.manual_seed(s.seed)
    _AUTOCAST[0] = torch.bfloat16 if trl_bf16(s) else None
    _AUTOCAST_DEVICE[0] = torch.device(s.device).type
    tok = load_tokenizer(s.model_dir)
    policy = _with_lora(s, load_hf(s, AutoModelForCausalLM))
    reference = load_hf(s, AutoModelForCausalLM).requires_grad_(False).eval()
    reward_model = load_hf(s, AutoModelForCausalLM).requires_grad_(False).eval()
    critic = _with_lora(s, load_hf(s, AutoModelForCausalLM))
    hidden = reference.config.hidden_size
    reward_head = nn.Linear(hidden, 1).to(s.device).requires_grad_(False)
    value_head = nn.Linear(hidden, 1).to(s.device)
    nn.init.zeros_(value_head.weight)
    nn.init.zeros_(value_head.bias)
    after_load = _loaded_mb(s, start)

    cfg = _ppo_config(s)
    torch.manual_seed(cfg.seed)
    prompt_ids = [prompt_token_ids(tok, m) for m in _prompts(s, cfg)]
    ids, mask = left_pad(prompt_ids, tok.pad_token_id)
    policy.eval()
    with torch.no_grad(), _autocast():
        out = policy.generate(input_ids=ids.to(s.device), attention_mask=mask.to(s.device), do_sample=True,
                              temperature=cfg.temperature, top_p=1.0, max_new_tokens=s.max_new_tokens,
                              min_new_tokens=s.max_new_tokens, pad_token_id=tok.pad_token_id,
                              eos_token_id=tok.eos_token_id, use_cache=True)
    responses = split_generated(out.cpu(), ids.shape[1], tok.eos_token_id, tok.pad_token_id)
    batch = build_sequences(prompt_ids, responses, tok.pad_token_id).to(s.device)

    def values_of(ids: Tensor, attn: Tensor) -> Tensor:
        return value_head(_hidden(critic, ids, attn)[:, :-1].float()).squeeze(-1)

    old, ref, ent, old_values, scores = [], [], [], [], []
    critic.eval()
    with torch.no_grad():  # the rollout's quantities, in chunks of minibatch_size rows like ours
        for index in torch.arange(len(responses)).split(cfg.minibatch_size):
            rows, attn = batch.input_ids[index], batch.attention_mask[index]
            logits = _logits(policy, rows, attn)
            old.append(gather_logprobs(logits, rows[:, 1:]))
            ent.append(entropy_from_logits(logits))
            ref.append(gather_logprobs(_logits(reference, rows, attn), rows[:, 1:]))
            old_values.append(values_of(rows, attn))
            picked = _hidden(reward_model, rows, attn)[torch.arange(len(index)), last_token_index(attn)]
            scores.append(reward_head(picked.float()).squeeze(-1))
    lp = RolloutLogprobs(torch.cat(old), torch.cat(ref), torch.cat(ent))
    old_v = torch.cat(old_values)
    advantages, returns, _ = ppo_advantages(torch.cat(scores), lp, old_v, batch.response_mask, cfg)

    trainable = [p for p in policy.parameters() if p.requires_grad]
    critic_params = [p for p in critic.parameters() if p.requires_grad] + list(value_head.parameters())
    optimizer = torch.optim.AdamW([{"params": trainable, "name": "policy"}, {"params": critic_params, "name": "value"}],
                                  lr=cfg.learning_rate, weight_decay=0.0)
    policy.train()
    critic.train()
    for index in minibatches(len(responses), cfg.minibatch_size, cfg.update_epochs):
        rows, attn, m = minibatch_rows(batch, index)
        w = m.shape[1]
        logp = gather_logprobs(_logits(policy, rows, attn), rows[:, 1:])
        policy_loss, _, _ = ppo_policy_loss(logp, cut(lp.old_logp, index, w), cut(advantages, index, w), m,
                                            cfg.clip_eps)
        policy_loss.backward()
        value_loss, _ = ppo_value_loss(values_of(rows, attn), cut(old_v, index, w), cut(returns, index, w), m,
                                       cfg.value_clip)
        value_loss.backward()
        clipped_step(optimizer, 1.0)
    out = _finish(s, start, after_load)
    out["notes"]["response_tokens"] = float(batch.response_mask.sum(dim=1).mean())
    return out
