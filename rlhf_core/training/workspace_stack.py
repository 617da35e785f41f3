"""Building the model stack a workspace describes, with its current policy and reward versions."""

from __future__ import annotations

from pathlib import Path

import torch

from rlhf_core.models.loading import pick_device, resolve_model_dir, return_freed_tensor_memory
from rlhf_core.models.stack import LoraSettings, ModelStack
from rlhf_core.training.distributed import DataParallel
from rlhf_core.workspace import Workspace
from storage import Database, current_policy, current_reward_model, get_policy


def use_4bit(ws: Workspace, device: torch.device) -> bool:
    """`quantize_4bit = auto` means 4-bit NF4 on CUDA and full precision on CPU."""
    setting = ws.config.model.quantize_4bit
    return device.type == "cuda" if setting == "auto" else setting == "true"


def load_stack(ws: Workspace, *, gradient_checkpointing: bool | None = None) -> ModelStack:
    """The workspace's base model with fresh `policy`, `value` and `reward` adapters.

    `gradient_checkpointing` overrides `model.activation_checkpointing` (True = on, False = off).
    """
    cfg = ws.config
    device = DataParallel().device(pick_device(cfg.model.device))  # under a launcher: this process's GPU
    model_dir = resolve_model_dir(cfg.model.name, ws.model_cache_dir())
    if cfg.model.release_cpu_memory and device.type == "cpu":
        return_freed_tensor_memory()
    checkpointing = {"auto": "auto", "on": True, "off": False}[cfg.model.activation_checkpointing]
    stack = ModelStack.load(
        model_dir, quantize_4bit=use_4bit(ws, device), device=device,
        policy_lora=LoraSettings(cfg.policy.lora_r, cfg.policy.lora_alpha, cfg.policy.lora_dropout),
        reward_lora=LoraSettings(cfg.reward.lora_r, cfg.reward.lora_alpha, cfg.reward.lora_dropout),
        gradient_checkpointing=checkpointing if gradient_checkpointing is None else gradient_checkpointing,
        seed=cfg.policy.seed, generation=cfg.model.generation, precision=cfg.model.precision,
    )
    stack.keep_generation_copy = not cfg.model.release_cpu_memory
    return stack


def adapter_dir(ws: Workspace, kind: str, version: int) -> Path:
    """Where version `version` of adapter `kind` ("policy" or "reward") is saved."""
    return ws.adapters_dir / f"{kind}-v{version:04d}"


def activate_policy(stack: ModelStack, db: Database, version_id: int | None = None) -> int:
    """Put policy version `version_id` (default: current) into the `policy` adapter; returns its id."""
    version = current_policy(db) if version_id is None else get_policy(db, version_id)
    if version is None:
        raise ValueError(f"policy version {version_id} does not exist")
    if version.adapter_path:
        stack.load_adapter("policy", Path(version.adapter_path))
    else:
        stack.reset_adapter("policy")
    return version.id


def activate_reward_model(stack: ModelStack, db: Database) -> int | None:
    """Load the newest reward model into the `reward` adapter; None if none is trained yet."""
    version = current_reward_model(db)
    if version is None:
        return None
    stack.load_adapter("reward", Path(version.adapter_path))
    return version.id
