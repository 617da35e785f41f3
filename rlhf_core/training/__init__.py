"""Training on the model stack: preference data for the reward model (`reward_data`), its Bradley-Terry
training (`reward_model`) and service (`reward_service`), the policy gate's cross-fitted evidence (`crossfit`) on
the base's features, kept between trainings (`feature_cache`),
each annotator's reliability and left bias
(CrowdBT weights, `crowd_weights`), data-parallel helpers (`distributed`), policy
rollouts (`rollout`), the PPO and GRPO updates (`ppo`, `grpo`), online DPO on judged pairs (`dpo`), supervised
fine-tuning on demonstrations (`sft`, stage 1), the policy training loop and service (`policy`), the score it
optimizes, the reward model and reward functions combined (`reward_scores`), the record
of a training run: per-step logs to the database and TensorBoard and the round summary (`run_log`), and
loading a workspace's model with its saved policy and reward versions (`workspace_stack`), the checkpoints a
re-queued training resumes from (`checkpoint`) and a version's atomic publication, files before row (`publish`).
It builds on
`models` and `algorithms`, reads and writes versions through `storage`, and knows nothing of the job queue
or UI.
The process reward model: its training and scores (`prm`) and its service, reward and verifier
(`prm_service`).
"""
