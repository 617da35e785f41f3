"""Seconds per training step, ours against TRL's, for the reward model and for GRPO.

Each function runs in its own worker process (see `worker.py`) and returns
{"seconds": [wall time per timed step], "cpu_seconds": [process CPU time, all threads], "notes": {...}}.
Model loading and trainer construction are never timed; the first `warmup` steps are run and dropped.
CPU time is reported beside wall time because the benchmark machine may be shared: it moves less
than wall time when other processes compete for the cores.
"""

from __future__ import annotations

import random
import tempfile
import time
from typing import Any

import torch

from bench.train_step.data import chat_prompts, completion_text, length_score, preference_pairs
from bench.train_step.settings import BenchSettings
from bench.train_step.sides import load_hf, load_stack, peft_config, synchronize, trl_bf16, trl_checkpointing
from rlhf_core.config import PolicyConfig, RewardConfig
from rlhf_core.training.policy import train_policy
from rlhf_core.training.reward_data import encode_pairs
from rlhf_core.training.reward_model import train_reward_model


def _reward_config(s: BenchSettings) -> RewardConfig:
    return RewardConfig(lora_r=s.lora_r, lora_alpha=s.lora_alpha, lora_dropout=0.0, learning_rate=s.reward_lr,
                        epochs=1, batch_size=s.batch_size, eval_fraction=0.0, max_length=s.max_length, seed=s.seed)


def _policy_config(s: BenchSettings, steps: int, algo: str) -> PolicyConfig:
    return PolicyConfig(algo=algo, lora_r=s.lora_r, lora_alpha=s.lora_alpha, lora_dropout=0.0,
                        learning_rate=s.policy_lr, kl_beta=s.kl_beta, clip_eps=s.clip_eps, steps=steps,
                        prompts_per_step=s.prompts, group_size=s.group_size, update_epochs=s.update_epochs,
                        minibatch_size=s.minibatch_size, max_new_tokens=s.max_new_tokens,
                        min_new_tokens=s.max_new_tokens,  # eos suppressed: both sides generate the same length
                        temperature=s.temperature, seed=s.seed)


def _reward_training_pairs(s: BenchSettings):
    """Exactly enough pairs for `reward_steps` full batches, cycling the synthetic set if needed."""
    pool = preference_pairs(seed=s.seed)
    return [pool[i % len(pool)] for i in range(s.reward_steps * s.batch_size)]


def _our_batch_order(n: int, seed: int) -> list[int]:
    # The order train_reward_model visits its examples in (a seeded shuffle); TRL gets the same batches.
    order = list(range(n))
    random.Random(seed).shuffle(order)
    return order


class _Stamps:
    """(wall, CPU) time stamps at the end of each step; a step lasts from the previous stamp to its own."""

    def __init__(self, device: str) -> None:
        self.device = device
        self.wall: list[float] = []
        self.cpu: list[float] = []

    def stamp(self, *_: Any) -> None:
        synchronize(self.device)
        self.wall.append(time.perf_counter())
        self.cpu.append(time.process_time())

    def between(self, kind: str) -> list[float]:
        values = self.wall if kind == "wall" else self.cpu
        return [b - a for a, b in zip(values, values[1:])]


def reward_ours(s: BenchSettings) -> dict[str, Any]:
    """`train_reward_model`; a step's duration is the time between two consecutive on_step reports."""
    stack = load_stack(s)
    stamps = _Stamps(s.device)
    train_reward_model(stack, _reward_training_pairs(s), [], _reward_config(s), on_step=stamps.stamp, progress=False)
    return {"seconds": stamps.between("wall")[-s.steps:], "cpu_seconds": stamps.between("cpu")[-s.steps:]}


def _step_timer(device: str):
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        """Wall time of each optimizer step: on_step_begin -> on_step_end (logging and saving are outside)."""

        def __init__(self) -> None:
            self.begins, self.ends = _Stamps(device), _Stamps(device)

        def on_step_begin(self, args, state, control, **kwargs):
            self.begins.stamp()

        def on_step_end(self, args, state, control, **kwargs):
            self.ends.stamp()

        def durations(self, kind: str, steps_per_unit: int = 1) -> list[float]:
            """Time of each unit of `steps_per_unit` optimizer steps: first begin -> last end."""
            begins = getattr(self.begins, kind)[::steps_per_unit]
            ends = getattr(self.ends, kind)[steps_per_unit - 1::steps_per_unit]
            return [end - begin for begin, end in zip(begins, ends)]

    return StepTimer()


def _trainer_args(s: BenchSettings, out_dir: str, max_steps: int) -> dict[str, Any]:
    """TrainingArguments shared by both TRL trainers: our optimizer, schedule, clipping and precision."""
    return dict(
        output_dir=out_dir, max_steps=max_steps, gradient_accumulation_steps=1, lr_scheduler_type="constant",
        warmup_steps=0, max_grad_norm=1.0, optim="adamw_torch", seed=s.seed, report_to=[], save_strategy="no",
        logging_steps=10**6, disable_tqdm=True, dataloader_num_workers=0, use_cpu=s.device == "cpu",
        bf16=trl_bf16(s), gradient_checkpointing=trl_checkpointing(s),
        gradient_checkpointing_kwargs={"use_reentrant": False},  # ours is non-reentrant too
    )


def reward_trl(s: BenchSettings) -> dict[str, Any]:
    """TRL's RewardTrainer on the same token ids, batches and order as ours."""
    from datasets import Dataset
    from torch.utils.data import SequentialSampler
    from transformers import AutoModelForSequenceClassification
    from trl import RewardConfig as TRLRewardConfig
    from trl import RewardTrainer

    from rlhf_core.models.loading import load_tokenizer

    class InOrderRewardTrainer(RewardTrainer):
        def _get_train_sampler(self, *args, **kwargs):
            return SequentialSampler(self.train_dataset)

    tokenizer = load_tokenizer(s.model_dir)
    encoded = encode_pairs(tokenizer, _reward_training_pairs(s), s.max_length)
    ordered = [encoded[i] for i in _our_batch_order(len(encoded), s.seed)]
    rows = [{"chosen_ids": p.prompt + p.chosen, "rejected_ids": p.prompt + p.rejected} for p in ordered]
    timer = _step_timer(s.device)
    with tempfile.TemporaryDirectory(prefix="train-step-trl-rm-") as out_dir:
        # torch.optim.AdamW's default weight decay, which our reward training uses.
        args = TRLRewardConfig(**_trainer_args(s, out_dir, s.reward_steps), per_device_train_batch_size=s.batch_size,
                               learning_rate=s.reward_lr, weight_decay=0.01, max_length=s.max_length)
        trainer = InOrderRewardTrainer(
            model=load_hf(s, AutoModelForSequenceClassification), args=args, train_dataset=Dataset.from_list(rows),
            processing_class=tokenizer, peft_config=peft_config(s, "SEQ_CLS"), callbacks=[timer])
        trainer.train()
    return {"seconds": timer.durations("wall")[-s.steps:], "cpu_seconds": timer.durations("cpu")[-s.steps:]}


def grpo_ours(s: BenchSettings) -> dict[str, Any]:
    """`train_policy(algo="grpo")` with the length score: its own per-step seconds (rollout -> update)."""
    stack = load_stack(s)

    def score(rollout) -> torch.Tensor:
        return torch.tensor([length_score(t) for t in rollout.texts])

    stamps = _Stamps(s.device)
    stamps.stamp()
    result = train_policy(stack, chat_prompts(seed=s.seed), score, _policy_config(s, s.warmup + s.steps, "grpo"),
                          algo="grpo", on_step=stamps.stamp, progress=False)
    timed = result.history[s.warmup:]
    return {"seconds": [row["seconds"] for row in timed], "cpu_seconds": stamps.between("cpu")[s.warmup:],
            "notes": {"response_tokens": sum(row["response_length"] for row in timed) / len(timed),
                      "optimizer_steps_per_grpo_step": s.update_epochs * -(-s.rollout_size // s.minibatch_size)}}


def grpo_trl(s: BenchSettings) -> dict[str, Any]:
    """TRL's GRPOTrainer laid out like ours: one generation of prompts x group_size responses, then
    update_epochs passes (num_iterations) of minibatch_size-sequence steps (steps_per_generation).
    A GRPO step is the trainer steps between two generations, timed from the first step's begin to
    the last step's end."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM
    from trl import GRPOConfig, GRPOTrainer

    from rlhf_core.models.loading import load_tokenizer

    if s.rollout_size % s.minibatch_size:
        raise ValueError(f"TRL needs the rollout ({s.rollout_size} sequences) to split into minibatches of "
                         f"{s.minibatch_size}; pick --minibatch-size dividing prompts x group-size")
    steps_per_generation = s.rollout_size // s.minibatch_size
    per_grpo_step = steps_per_generation * s.update_epochs
    lengths: list[int] = []

    def length_reward(prompts, completions, completion_ids, **kwargs) -> list[float]:
        lengths.extend(len(ids) for ids in completion_ids)
        return [length_score(completion_text(c)) for c in completions]

    timer = _step_timer(s.device)
    with tempfile.TemporaryDirectory(prefix="train-step-trl-grpo-") as out_dir:
        args = GRPOConfig(
            **_trainer_args(s, out_dir, (s.warmup + s.steps) * per_grpo_step), learning_rate=s.policy_lr,
            weight_decay=0.0, per_device_train_batch_size=s.minibatch_size, steps_per_generation=steps_per_generation,
            num_iterations=s.update_epochs, num_generations=s.group_size, max_completion_length=s.max_new_tokens,
            generation_kwargs={"min_new_tokens": s.max_new_tokens}, temperature=s.temperature, top_p=1.0, top_k=0,
            beta=s.kl_beta, epsilon=s.clip_eps, loss_type="grpo", scale_rewards="group", log_completions=False)
        trainer = GRPOTrainer(
            model=load_hf(s, AutoModelForCausalLM), reward_funcs=length_reward, args=args,
            train_dataset=Dataset.from_list([{"prompt": p} for p in chat_prompts(seed=s.seed)]),
            processing_class=load_tokenizer(s.model_dir), peft_config=peft_config(s, "CAUSAL_LM"), callbacks=[timer])
        trainer.train()
    timed_lengths = lengths[s.warmup * s.rollout_size:]
    return {"seconds": timer.durations("wall", per_grpo_step)[s.warmup:],
            "cpu_seconds": timer.durations("cpu", per_grpo_step)[s.warmup:],
            "notes": {"response_tokens": sum(timed_lengths) / max(1, len(timed_lengths)),
                      "optimizer_steps_per_grpo_step": per_grpo_step}}


# --------------------------------------------------------------------------- SFT (issue 31)


def _sft_examples(s: BenchSettings):
    """Exactly enough demonstrations for `reward_steps` full batches, each on its own prompt (`chat_prompts`: no
    prompt is shared, so ours gains nothing from packing a prompt's answers), answered by a synthetic pair's
    chosen response."""
    from rlhf_core.training.sft import SFTExample

    n = s.reward_steps * s.batch_size
    answers = preference_pairs(n=n, seed=s.seed)
    return [SFTExample(prompt, answers[i].chosen, i) for i, prompt in enumerate(chat_prompts(n=n, seed=s.seed))]


def _sft_config(s: BenchSettings):
    from rlhf_core.config import SFTConfig

    return SFTConfig(learning_rate=s.reward_lr, epochs=1, batch_size=s.batch_size, max_length=s.max_length,
                     eval_fraction=0.0, early_stopping=False, seed=s.seed)


def sft_ours(s: BenchSettings) -> dict[str, Any]:
    """`train_sft` (answers packed behind their prompt, the LM head on answer tokens only); a step's duration is
    the time between two consecutive on_step reports."""
    from rlhf_core.training.sft import train_sft

    stack = load_stack(s)
    stamps = _Stamps(s.device)
    result = train_sft(stack, _sft_examples(s), [], _sft_config(s), on_step=stamps.stamp, progress=False)
    return {"seconds": stamps.between("wall")[-s.steps:], "cpu_seconds": stamps.between("cpu")[-s.steps:],
            "notes": {"answer_tokens_per_step": result.summary["tokens"] / max(1, result.summary["steps"])}}


def sft_trl(s: BenchSettings) -> dict[str, Any]:
    """TRL's SFTTrainer on the same token ids (our encoding: chat-templated prompt, answer + end of turn), the
    same batches in the same order, completion-only loss (the mean NLL over the batch's answer tokens, as ours)."""
    from datasets import Dataset
    from torch.utils.data import SequentialSampler
    from transformers import AutoModelForCausalLM
    from trl import SFTConfig as TRLSFTConfig
    from trl import SFTTrainer

    from rlhf_core.models.loading import load_tokenizer
    from rlhf_core.training.sft import demonstration_batches, encode_demonstration

    class InOrderSFTTrainer(SFTTrainer):
        def _get_train_sampler(self, *args, **kwargs):
            return SequentialSampler(self.train_dataset)

    tokenizer = load_tokenizer(s.model_dir)
    encoded = [encode_demonstration(tokenizer, ex, s.max_length) for ex in _sft_examples(s)]
    # The batches train_sft draws for its (only) epoch: random.Random(seed), as in train_sft.
    order = [i for batch in demonstration_batches(encoded, s.batch_size, random.Random(s.seed)) for i in batch]
    rows = [{"input_ids": encoded[i].prompt + encoded[i].answer,
             "completion_mask": [0] * len(encoded[i].prompt) + [1] * len(encoded[i].answer)} for i in order]
    timer = _step_timer(s.device)
    with tempfile.TemporaryDirectory(prefix="train-step-trl-sft-") as out_dir:
        args = TRLSFTConfig(**_trainer_args(s, out_dir, s.reward_steps), per_device_train_batch_size=s.batch_size,
                            learning_rate=s.reward_lr, weight_decay=0.0, max_length=s.max_length,
                            completion_only_loss=True, packing=False)
        trainer = InOrderSFTTrainer(
            model=load_hf(s, AutoModelForCausalLM), args=args, train_dataset=Dataset.from_list(rows),
            processing_class=tokenizer, peft_config=peft_config(s, "CAUSAL_LM"), callbacks=[timer])
        trainer.train()
    return {"seconds": timer.durations("wall")[-s.steps:], "cpu_seconds": timer.durations("cpu")[-s.steps:]}
