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
- `cli/`: the `rlhf` command line.
- `config/` (typed `rlhf.toml`) and `workspace.py` (a project directory) are read by every room.

This file imports nothing, so `import rlhf_core` is cheap.
"""
