"""The reward model as a transformers model: the file `rlhf export-model --what reward` ships as
`rlhf_reward.py` in the export directory, so that

    AutoModelForSequenceClassification.from_pretrained(DIR, trust_remote_code=True)

loads it in a process that has never heard of rlhf-loop. It imports only torch and transformers.

The model is the base model's decoder with the reward LoRA merged into its weights, and the loop's
reward head: the response tokens' hidden states of a few layers, pooled (mean, sum, both, or the last
token), standardized, and read by K linear members whose mean is the reward. Which tokens are the
response is an input (`response_mask`), because the head pools over the response only; `score_texts`
tokenizes (prompt, response) pairs the way the loop does and is the easy way in.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import AutoModel, PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import SequenceClassifierOutputWithPast
from transformers.models.auto.configuration_auto import CONFIG_MAPPING


class RlhfRewardConfig(PretrainedConfig):
    """`base_config`: the base model's config as a dict (with its `model_type`); `reward_layers`: the
    hidden-state indices the head reads (0 = token embeddings, num_hidden_layers = the last layer's
    normalized output); `pooling`: "mean", "sum", "mean+sum" or "last"; `members`: K linear members;
    `max_length`: tokens of prompt + response the loop trained and scored with."""

    model_type = "rlhf_reward"

    def __init__(self, base_config: dict | None = None, reward_layers: list[int] | None = None,
                 pooling: str = "mean+sum", members: int = 1, max_length: int = 512, **kwargs) -> None:
        self.base_config = dict(base_config or {})
        self.reward_layers = list(reward_layers or [])
        self.pooling = pooling
        self.members = members
        self.max_length = max_length
        super().__init__(**kwargs)

    def decoder_config(self) -> PretrainedConfig:
        base = dict(self.base_config)
        return CONFIG_MAPPING[base.pop("model_type")].from_dict(base)


class RewardHead(nn.Module):
    """r_k = w_k · (φ − shift) / scale + b_k over pooled features φ [..., F]; K members."""

    def __init__(self, features: int, members: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(members, features))
        self.bias = nn.Parameter(torch.zeros(members))
        self.register_buffer("feature_shift", torch.zeros(features))
        self.register_buffer("feature_scale", torch.ones(features))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return nn.functional.linear((features - self.feature_shift) / self.feature_scale, self.weight, self.bias)


class RlhfRewardModel(PreTrainedModel):
    config_class = RlhfRewardConfig
    base_model_prefix = "model"
    _supports_sdpa = True
    _keep_in_fp32_modules_strict = ["score"]  # the head reads float32 features, whatever the decoder's dtype

    def __init__(self, config: RlhfRewardConfig) -> None:
        super().__init__(config)
        decoder_config = config.decoder_config()
        self.model = AutoModel.from_config(decoder_config)
        parts = len(config.pooling.split("+"))
        self.score = RewardHead(decoder_config.hidden_size * len(config.reward_layers) * parts, config.members)
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:  # every weight comes from the checkpoint
        pass

    def member_scores(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                      response_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Each member's score [B, K] of right- or left-padded sequences [B, T]; `response_mask` [B, T]
        marks the response's tokens (its end-of-turn token included)."""
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        layers = self.config.reward_layers
        last_only = layers == [self.model.config.num_hidden_layers]
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False,
                         output_hidden_states=not last_only)
        states = [out.last_hidden_state] if last_only else [out.hidden_states[i] for i in layers]
        pooled = []
        if self.config.pooling == "last":
            positions = torch.arange(attention_mask.shape[1], device=attention_mask.device)
            last = (positions * attention_mask.long()).argmax(dim=1)
            rows = torch.arange(input_ids.shape[0], device=input_ids.device)
            pooled = [hidden[rows, last].float() for hidden in states]
        else:
            if response_mask is None:
                raise ValueError("this reward model pools the response's tokens: pass response_mask (1 on the "
                                 "response's tokens), or score texts with model.score_texts(tokenizer, prompts, "
                                 "responses)")
            weights = response_mask.unsqueeze(-1)
            for hidden in states:
                w = weights.to(hidden.dtype)
                total = (hidden * w).sum(dim=1)
                for part in self.config.pooling.split("+"):
                    pooled.append((total / w.sum(dim=1).clamp(min=1) if part == "mean" else total).float())
        return self.score(torch.cat(pooled, dim=-1))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                response_mask: torch.Tensor | None = None, **_: object) -> SequenceClassifierOutputWithPast:
        """logits [B, 1]: the reward (the members' mean) of each sequence."""
        scores = self.member_scores(input_ids, attention_mask, response_mask)
        return SequenceClassifierOutputWithPast(logits=scores.mean(dim=-1, keepdim=True))

    def encode(self, tokenizer, prompt, response) -> tuple[list[int], list[int]]:  # noqa: ANN001
        """(prompt ids, response ids) as the loop encodes them: the chat template up to the assistant
        header, then the response's tokens and the end-of-turn token; a long pair is cut as in training
        (the response keeps its start, the prompt its end)."""
        messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
        if not isinstance(response, str):  # a conversational completion: [{"role": "assistant", ...}]
            response = "".join(m["content"] for m in response)
        ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        if isinstance(ids, dict) or hasattr(ids, "input_ids"):
            ids = ids["input_ids"]
        prompt_ids = list(ids)
        limit = self.config.max_length
        cap = limit - min(len(prompt_ids), limit // 2)
        response_ids = tokenizer(response, add_special_tokens=False)["input_ids"][: cap - 1]
        response_ids = response_ids + [tokenizer.eos_token_id]
        budget = limit - len(response_ids)
        if len(prompt_ids) > budget:
            prompt_ids = prompt_ids[-budget:]
        return prompt_ids, response_ids

    @torch.no_grad()
    def score_texts(self, tokenizer, prompts: list, responses: list, batch_size: int = 8) -> list[float]:  # noqa: ANN001
        """Rewards of (prompt, response) pairs. A prompt is a string (one user turn) or a list of chat
        messages; a response is a string or a list of assistant messages (TRL's conversational form)."""
        if len(prompts) != len(responses):
            raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
        device = next(self.parameters()).device
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        scores: list[float] = []
        for start in range(0, len(prompts), batch_size):
            rows = [self.encode(tokenizer, p, r) for p, r in zip(prompts[start:start + batch_size],
                                                                  responses[start:start + batch_size])]
            width = max(len(p) + len(r) for p, r in rows)
            ids = torch.full((len(rows), width), pad, dtype=torch.long)
            mask = torch.zeros((len(rows), width), dtype=torch.long)
            response_mask = torch.zeros((len(rows), width))
            for i, (p, r) in enumerate(rows):
                ids[i, :len(p) + len(r)] = torch.tensor(p + r)
                mask[i, :len(p) + len(r)] = 1
                response_mask[i, len(p):len(p) + len(r)] = 1.0
            out = self(ids.to(device), mask.to(device), response_mask.to(device))
            scores += out.logits[:, 0].float().cpu().tolist()
        return scores
