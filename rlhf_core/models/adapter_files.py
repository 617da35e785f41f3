"""Saving, loading and resetting the stack's LoRA adapters and heads (safetensors + a JSON description).

A mixin of `ModelStack`: it expects `model` (the PEFT model), `heads`, `loras`, `model_dir`, `device`
and the freshly initialised states `_initial` / `_initial_heads`.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from peft import get_peft_model_state_dict, set_peft_model_state_dict
from safetensors.torch import load_file, save_file
from torch import Tensor

from rlhf_core.models.reward_head import load_head_state


class AdapterFiles:
    def _adapter_state(self, name: str) -> dict[str, Tensor]:
        state = get_peft_model_state_dict(self.model, adapter_name=name)
        return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in state.items()}

    def save_adapter(self, name: str, directory: Path) -> Path:
        """Write adapter `name` (and its head) as safetensors plus a small JSON description."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        tensors = self._adapter_state(name)
        if name in self.heads:
            head = self.heads[name].state_dict()
            tensors.update({f"head.{k}": v.detach().cpu().contiguous() for k, v in head.items()})
        tmp = directory / "adapter.safetensors.tmp"
        save_file(tensors, str(tmp))
        tmp.replace(directory / "adapter.safetensors")
        meta = {"adapter": name, "lora": asdict(self.loras[name]), "base_model": str(self.model_dir)}
        if name == "reward":
            meta.update(members=self.reward_members_count, pooling=self.reward_pooling,
                        feature_depths=list(self.reward_depths))
        (directory / "adapter.json").write_text(json.dumps(meta, indent=2))
        return directory

    def load_adapter(self, name: str, directory: Path) -> None:
        """Restore adapter `name` exactly as `save_adapter` wrote it."""
        path = Path(directory) / "adapter.safetensors"
        if not path.is_file():
            raise FileNotFoundError(f"no adapter weights at {path}")
        tensors = load_file(str(path), device=str(self.device))
        head = {k[len("head."):]: v for k, v in tensors.items() if k.startswith("head.")}
        lora = {k: v for k, v in tensors.items() if not k.startswith("head.")}
        result = set_peft_model_state_dict(self.model, lora, adapter_name=name)
        unexpected = [k for k in getattr(result, "unexpected_keys", []) if "lora_" in k]
        if unexpected:
            raise ValueError(f"{path} does not match this base model (unexpected keys: {unexpected[:3]})")
        if name == "reward":
            meta_path = Path(directory) / "adapter.json"
            meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
            members = head["weight"].shape[0] if "weight" in head else 1
            self.set_reward_head(members, meta.get("pooling", "last"), meta.get("feature_depths", (1.0,)))
            if head:
                load_head_state(self.heads[name], head)
        elif head:
            self.heads[name].load_state_dict(head)

    def reset_adapter(self, name: str) -> None:
        """Back to the freshly initialised adapter and head (for `policy`: exactly the base model)."""
        set_peft_model_state_dict(self.model, {k: v.to(self.device) for k, v in self._initial[name].items()},
                                  adapter_name=name)
        if name == "reward":
            self.set_reward_head(1, "last")
        if name in self.heads:
            self.heads[name].load_state_dict(self._initial_heads[name])
