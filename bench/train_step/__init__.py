"""Training-step cost, ours against TRL: `python -m bench.train_step --help` (from the repository root).

Modules: `__main__` (the command: arguments, one worker process per measurement, the figures), `report`
(the ours/theirs table and the method in words), `settings` (what both sides run with; standard library
only, like the three before it, so the orchestrator never imports torch), `worker` (a measurement's
process), `timing` (seconds per reward-model, GRPO and SFT step, ours and TRL's), `memory` (peak memory of
one PPO step, one shared base against four separate models), `sides` (how each side loads its model, with
the same LoRA, precision and checkpointing) and `data` (the synthetic data and the length reward).
"""
