"""Writing a version in the ecosystem's formats: a merged Hugging Face model directory and a standard
PEFT adapter for the policy, a transformers reward model (custom code shipped beside the weights).

Each writer fills an empty directory from a `ModelStack` holding the version's adapter. A merged weight
is base + B·A computed in float32 on the base the version was trained on (a 4-bit NF4 base is
de-quantized first, which is what the loop's forward passes computed with), then stored in the
export's dtype. A bfloat16 export is merged by `MergedCopy` (every layer merged, `low_rank=False`) on a
stack loaded with the workspace's precision. The loop itself decodes with the adapter kept beside the
bfloat16 weights, since merging rounds a small LoRA delta away; a float32 export keeps it.
"""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path
from typing import Any

import torch
from peft import get_peft_model_state_dict
from safetensors.torch import save_file
from torch import nn
from transformers import AutoTokenizer, GenerationConfig

from rlhf_core.models.generation import MergedCopy, decoder_and_head, dtype_name
from rlhf_core.models.loading import pick_device
from rlhf_core.models.stack import LoraSettings, ModelStack

REWARD_CODE_FILE = "rlhf_reward.py"  # the shipped copy of `hf_reward_model.py`
REWARD_CODE_SOURCE = Path(__file__).with_name("hf_reward_model.py")
# Config keys that describe how this process loaded the base, not the exported model.
LOAD_ONLY_KEYS = ("quantization_config", "auto_map", "architectures", "_name_or_path", "transformers_version")


def lora_settings(adapter_dir: Path, fallback: LoraSettings) -> LoraSettings:
    """The LoRA shape an adapter was saved with (its adapter.json), so a changed rlhf.toml cannot
    mismatch an older version; `fallback` when the file says nothing."""
    meta_path = Path(adapter_dir) / "adapter.json"
    lora = json.loads(meta_path.read_text()).get("lora") if meta_path.is_file() else None
    return LoraSettings(**lora) if lora else fallback


def load_export_stack(model_dir: Path, *, quantize_4bit: bool, device: str, policy_lora: LoraSettings,
                      reward_lora: LoraSettings, precision: str = "fp32") -> ModelStack:
    """The base with fresh adapters for exporting: decoding through the adapter (no merged copy of its
    own), no activation checkpointing. `precision`: "fp32" keeps the base's full-precision weights; the
    workspace's `model.precision` stores the base's LoRA-targeted weights as its passes do (bfloat16 under
    autocast), so a bfloat16 merge starts from the weights the loop's passes use."""
    return ModelStack.load(model_dir, quantize_4bit=quantize_4bit, device=pick_device(device),
                           policy_lora=policy_lora, reward_lora=reward_lora, gradient_checkpointing=False,
                           generation="adapter", precision=precision)


def merged_model(stack: ModelStack, adapter: str | None, dtype: torch.dtype = torch.float32) -> nn.Module:
    """A plain transformers model (no PEFT) of the base with `adapter` merged in (None: the bare base), its
    weights in `dtype` on the stack's device."""
    return MergedCopy(stack.model, dtype, low_rank=False).sync(adapter)


def exported_config_dict(config: Any, dtype: torch.dtype = torch.float32) -> dict[str, Any]:
    """The base's config as a plain model would carry it: `dtype`, cache on, no quantization."""
    data = config.to_dict()
    for key in LOAD_ONLY_KEYS:
        data.pop(key, None)
    data["use_cache"] = True
    data["dtype"] = dtype_name(dtype)
    data.pop("torch_dtype", None)
    return data


def write_tokenizer(model_dir: Path, out: Path) -> None:
    """The base's tokenizer files (chat template included), as the base directory has them."""
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    if tokenizer.chat_template is None:
        raise ValueError(f"the tokenizer of {model_dir} has no chat template")
    tokenizer.save_pretrained(str(out))


def generation_config(model_dir: Path, stack: ModelStack, sampling: dict[str, Any]) -> GenerationConfig:
    """The base's generation config with the workspace's sampling settings: temperature then top-p, no
    top-k (the loop samples exactly so; transformers would otherwise apply top_k = 50)."""
    try:
        config = GenerationConfig.from_pretrained(str(model_dir))
    except OSError:
        config = GenerationConfig()
    tok = stack.tokenizer
    config.update(do_sample=True, temperature=sampling["temperature"], top_p=sampling["top_p"], top_k=0,
                  max_new_tokens=sampling["max_new_tokens"], eos_token_id=tok.eos_token_id,
                  pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id)
    return config


def write_merged_policy(stack: ModelStack, out: Path, *, adapter: str | None, sampling: dict[str, Any],
                        dtype: torch.dtype = torch.float32) -> None:
    """A complete model directory: config, safetensors weights (LoRA merged) in `dtype`, tokenizer,
    generation config."""
    model = merged_model(stack, adapter, dtype)
    config = copy.deepcopy(model.config)
    for key in ("quantization_config", "_pre_quantization_dtype"):
        if hasattr(config, key):
            delattr(config, key)
    config.use_cache = True
    config.dtype = dtype
    model.config = config
    model.generation_config = generation_config(stack.model_dir, stack, sampling)
    model.to("cpu").save_pretrained(str(out), safe_serialization=True)
    write_tokenizer(stack.model_dir, out)


def write_peft_policy(stack: ModelStack, out: Path, *, adapter: str = "policy",
                      dtype: torch.dtype = torch.float32) -> None:
    """A standard PEFT adapter directory (adapter_config.json + adapter_model.safetensors, tensors in
    `dtype`) whose `base_model_name_or_path` is the base model directory; the tokenizer beside it."""
    config = copy.deepcopy(stack.model.peft_config[adapter])
    config.base_model_name_or_path = str(stack.model_dir)
    config.inference_mode = True
    config.save_pretrained(str(out))
    state = get_peft_model_state_dict(stack.model, adapter_name=adapter)
    tensors = {k: v.detach().to("cpu", dtype).contiguous() for k, v in state.items()}
    save_file(tensors, str(out / "adapter_model.safetensors"), metadata={"format": "pt"})
    write_tokenizer(stack.model_dir, out)


def write_reward_model(stack: ModelStack, out: Path, *, max_length: int,
                       dtype: torch.dtype = torch.float32) -> dict[str, Any]:
    """The reward adapter merged into the base's decoder (weights in `dtype`), the head beside it (always
    float32, as the loop keeps it), and the modeling code (`rlhf_reward.py`) that transformers' Auto
    classes load with trust_remote_code. Returns the config."""
    decoder = decoder_and_head(merged_model(stack, "reward", dtype))[0]
    head = stack.heads["reward"]
    base_config = exported_config_dict(decoder.config, dtype)
    layers = head.layer_indices(decoder.config.num_hidden_layers)
    tensors = {f"model.{k}": v.detach().to("cpu", dtype).contiguous()
               for k, v in decoder.state_dict().items()}
    for name in ("weight", "bias", "feature_shift", "feature_scale"):
        tensors[f"score.{name}"] = getattr(head, name).detach().to("cpu", torch.float32).contiguous()
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    config = {
        "model_type": "rlhf_reward", "architectures": ["RlhfRewardModel"],
        "auto_map": {"AutoConfig": f"{REWARD_CODE_FILE[:-3]}.RlhfRewardConfig",
                     "AutoModelForSequenceClassification": f"{REWARD_CODE_FILE[:-3]}.RlhfRewardModel"},
        "base_config": base_config, "reward_layers": layers, "pooling": head.pooling,
        "members": head.out_features, "max_length": max_length, "num_labels": 1, "dtype": dtype_name(dtype),
    }
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    shutil.copyfile(REWARD_CODE_SOURCE, out / REWARD_CODE_FILE)
    write_tokenizer(stack.model_dir, out)
    return config
