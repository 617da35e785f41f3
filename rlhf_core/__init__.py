"""Models and algorithms of the online RLHF loop, in rooms whose names say what they hold.

- `algorithms/`: the pure math (Bradley-Terry, KL estimators, GAE, whitening, PPO/GRPO losses,
  agreement statistics); tensors in, tensors out, nothing else of the project imported.
- `models/`: loading and converting the base model, the `ModelStack` (one frozen base, named LoRA
  adapters, scalar heads), token batching, tiny test models.
- `training/`: reward-model training and its data, rollouts, PPO and GRPO updates, the policy
  training service, and loading a workspace's versions onto the stack.
- `loop/`: sampling pairs, rounds, the job worker, evaluation, simulated annotators and gold
  preferences, the demo, the operator page's data.
- `data/`: prompt files, preference export, the built-in prompt sets.
- `model_export/`: versions out in the ecosystem's formats (merged HF model, PEFT adapter, transformers
  reward model) with model cards.
- `cli/`: the `rlhf` command line.
- `config/` (typed `rlhf.toml`) and `workspace.py` (a project directory) are read by every room.

This file imports nothing of the project, so `import rlhf_core` is cheap; its one function,
`reward_function`, reads an exported reward model with transformers alone (imported when called).
Importing it keeps Hugging Face libraries offline (`HF_HUB_OFFLINE=1` unless already set): nothing
downloads at run time, not even the optional CPU kernel that bitsandbytes asks the hub for.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path


def stay_offline() -> None:
    """Forbid Hugging Face libraries from reaching the hub (values already set are respected), and
    quiet the line bitsandbytes' CPU backend prints at every import when, offline, it cannot fetch its
    optional hub kernel (transformers >= 5.2 installs `kernels`); it falls back to its own kernels."""
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
        os.environ.setdefault(var, "1")
    for name in ("bitsandbytes.backends.cpu.ops", "kernels._internals.hf_hub"):
        logging.getLogger(name).setLevel(logging.ERROR)


stay_offline()


def reward_function(directory: str | Path, *, device: str | None = None, batch_size: int = 8
                    ) -> Callable[..., list[float]]:
    """A TRL reward function (`prompts, completions, **kwargs -> list[float]`) scoring with the reward
    model that `rlhf export-model --what reward` wrote to `directory`; pass it as `reward_funcs` to TRL's
    GRPOTrainer. Prompts and completions may be strings or chat message lists (TRL's conversational
    form). `device`: where the model runs (default: CUDA when present, else CPU).
    """
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    directory = str(Path(directory).expanduser())
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    tokenizer = AutoTokenizer.from_pretrained(directory, trust_remote_code=True)  # its config names the custom class
    model = AutoModelForSequenceClassification.from_pretrained(directory, trust_remote_code=True).to(device).eval()

    def rlhf_reward(prompts: list, completions: list, **kwargs: object) -> list[float]:
        return model.score_texts(tokenizer, list(prompts), list(completions), batch_size=batch_size)

    rlhf_reward.model, rlhf_reward.tokenizer = model, tokenizer  # for callers that want to look inside
    return rlhf_reward
