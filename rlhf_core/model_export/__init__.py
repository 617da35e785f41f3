"""Models out: a policy or reward-model version translated into the formats the ecosystem loads, at
the edge, in one place. A merged Hugging Face model directory and a standard PEFT adapter for the
policy, a transformers reward model with its modeling code shipped beside the weights (`writers`,
`hf_reward_model`), each with a Hub-style model card (`card`); `request` checks what was asked before any
model loads, and `service` writes atomically and audits. Inside the workspace, adapters keep their own
compact format.
"""
