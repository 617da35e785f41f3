"""Training on the model stack: preference data for the reward model (`reward_data`) and its
Bradley-Terry training service (`reward_model`), policy rollouts (`rollout`), the PPO and GRPO
updates (`ppo`, `grpo`), online DPO on judged pairs (`dpo`), the policy training loop and service
(`policy`) and what it returns (`policy_result`), per-step logs to the database and TensorBoard
(`step_log`), and loading a workspace's model with its saved policy and reward versions
(`workspace_stack`). It builds on `models` and `algorithms`, reads and writes versions through
`storage`, and knows nothing of the job queue or UI.
"""
