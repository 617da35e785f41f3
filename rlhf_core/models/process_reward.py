"""The process reward model on the stack: a `prm` LoRA adapter and a one-logit step head, added to the frozen base
when first needed (`enable_prm`), so a stack that never scores steps carries nothing for it and the other adapters'
seeded initialisation is unchanged. The head reads the last layer's hidden state at each step's last token: the
logit of P(step is right | prompt and the steps so far), Lightman et al.'s "scored at each step's end".

A mixin of `ModelStack`: it expects `model`, `heads`, `loras`, `device`, `use`, `hidden_states`, `_adapter_state`,
`_lora_params` and the initial states `_initial` / `_initial_heads`.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

PRM = "prm"


class ProcessRewardScoring:
    @property
    def has_prm(self) -> bool:
        return PRM in self.model.peft_config

    def enable_prm(self, lora, seed: int = 0) -> None:  # noqa: ANN001 - models.stack.LoraSettings
        """Add the `prm` adapter (LoRA settings `lora`) and its step head, freshly initialised from `seed` without
        touching torch's global random state; nothing when they are there already."""
        if self.has_prm:
            return
        active = self.model.active_adapter
        flags = [(p, p.requires_grad) for p in self._lora_params]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.model.add_adapter(PRM, lora.peft_config())
            hidden = self.model.get_base_model().config.hidden_size
            head = nn.Linear(hidden, 1)
            nn.init.normal_(head.weight, std=1.0 / (hidden + 1) ** 0.5)
            nn.init.zeros_(head.bias)
        self.model.set_adapter(active)
        for p, flag in flags:
            p.requires_grad_(flag)
        mine = [p for n, p in self.model.named_parameters() if f".{PRM}." in n and "lora_" in n]
        for p in mine:  # trained in float32 whatever the frozen base is stored in
            p.data = p.data.float()
            p.requires_grad_(False)
        self._lora_params.extend(mine)
        self.heads[PRM] = head.to(self.device, torch.float32).requires_grad_(False)
        self.loras[PRM] = lora
        self._initial[PRM] = self._adapter_state(PRM)
        self._initial_heads[PRM] = {k: v.detach().clone() for k, v in self.heads[PRM].state_dict().items()}

    def step_logits(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """The step head's logit at every position, through the `prm` adapter: [B, T] -> [B, T] float32 (read them
        at the steps' last tokens)."""
        with self.use(PRM):
            hidden = self.hidden_states(input_ids, attention_mask)
        return self.heads[PRM](hidden.float()).squeeze(-1)
