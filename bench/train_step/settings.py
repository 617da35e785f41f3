"""The settings both sides of the training-step benchmark run with. Standard library only, so the
orchestrating process can build them without importing torch."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")  # as ModelStack


@dataclass(frozen=True)
class BenchSettings:
    """Everything both sides share. A reward-model step trains on `batch_size` preference pairs; a GRPO
    step samples `group_size` responses to each of `prompts` prompts (`rollout_size` in all); the PPO
    step samples one response to each of `rollout_size` prompts, so it handles as many sequences."""

    model_dir: str
    model_label: str
    device: str  # "cpu" or "cuda"
    quantize_4bit: bool
    warmup: int
    steps: int
    batch_size: int
    prompts: int
    group_size: int
    max_new_tokens: int
    max_length: int  # reward-model cap on prompt + response tokens
    minibatch_size: int  # policy-update minibatch, sequences
    update_epochs: int  # passes over one rollout
    lora_r: int = 16
    lora_alpha: int = 32
    reward_lr: float = 2e-4  # RewardConfig's default
    policy_lr: float = 5e-5  # PolicyConfig's default
    kl_beta: float = 0.05
    clip_eps: float = 0.2
    temperature: float = 1.0
    # "defaults": each side as it ships (ours: model.activation_checkpointing = auto; TRL: on); "on"; "off".
    checkpointing: str = "defaults"
    # "auto": bfloat16 autocast on both sides where the hardware computes bf16 natively (TRL's default
    # `bf16` and ours `model.precision = auto`); "fp32": float32 on both sides.
    autocast: str = "auto"
    # Ours: `model.generation` ("auto": decode from a merged bfloat16 copy where native; "adapter": through the
    # LoRA adapter, no copy). The copy is a second set of weights, so it shows in the PPO memory figure.
    generation: str = "auto"
    threads: int = 0  # torch intra-op threads in the workers; 0 = torch's default
    release_cpu_memory: bool = True  # PPO memory workers on CPU: return freed memory to the OS (both variants)
    seed: int = 0

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> BenchSettings:
        return cls(**json.loads(text))

    @property
    def reward_steps(self) -> int:
        """Reward-model steps run: ours is timed between consecutive steps, so its first is never timed."""
        return max(self.warmup, 1) + self.steps

    @property
    def rollout_size(self) -> int:
        return self.prompts * self.group_size

    @property
    def precision(self) -> str:
        base = "4-bit NF4 base" if self.quantize_4bit else ("fp32 base" if self.device == "cpu" else "bf16 base")
        return f"{base}, {'bf16 autocast where native' if self.autocast == 'auto' else 'fp32 compute'} on both sides"
