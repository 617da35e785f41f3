"""The local judge kinds, on this machine's CPU or GPU:

- `hf`: a causal LM directory ("default": the embedded SmolLM2-135M-Instruct) reads the same chat as an `openai`
  judge, followed by "Verdict:", and decides by the next-token log-probabilities of A and B: no sampling, a batch
  of pairs per forward pass. p(first) is the softmax over those two tokens.
- `reward-model`: a sequence-classification reward model (any transformers one that scores a chat, or this tool's
  `rlhf export-model --what reward`, through its `score_texts`) scores both responses; p(first) = σ(score margin).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from rlhf_core.config import JudgesConfig
from rlhf_core.judges.prompting import VERDICT_PREFIX, judge_messages, render_conversation
from rlhf_core.judges.settings import JudgeConfigError, check_model_dir
from rlhf_core.judges.verdicts import OrderAnswer, Shown, Usage
from rlhf_core.models.batching import prompt_token_ids
from rlhf_core.models.loading import DEFAULT_MODEL


def check_hf_settings(settings: dict[str, Any]) -> None:
    if settings["model"] != DEFAULT_MODEL:
        check_model_dir(str(settings["model"]), "causal LM")


def check_reward_model_settings(settings: dict[str, Any]) -> None:
    import json

    path = check_model_dir(str(settings["model"]), "reward-model")
    config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    classes = " ".join(config.get("architectures") or []) + " " + " ".join(config.get("auto_map") or {})
    if "SequenceClassification" not in classes:
        raise JudgeConfigError(f"--model {path} is no sequence-classification model (its config.json names "
                               f"{config.get('architectures')}); export one with `rlhf export-model --what reward`")


def _device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _chat_ids(tokenizer, messages: list[dict[str, str]]) -> list[int]:  # noqa: ANN001
    if getattr(tokenizer, "chat_template", None):
        return prompt_token_ids(tokenizer, messages)
    text = "\n\n".join(f"{m['role'].capitalize()}: {m['content']}" for m in messages) + "\n\nAssistant:"
    return tokenizer(text, add_special_tokens=False)["input_ids"]


class HFJudge:
    def __init__(self, model_dir: Path, rubric: str | None, cfg: JudgesConfig) -> None:
        from rlhf_core.models.loading import load_causal_lm, load_tokenizer

        self.rubric, self.batch_size, self.usage = rubric, cfg.batch_size, Usage()
        self.tokenizer = load_tokenizer(model_dir)
        self.model = load_causal_lm(model_dir, quantize_4bit=False, device=_device())
        with_a = self.tokenizer(f"{VERDICT_PREFIX} A", add_special_tokens=False)["input_ids"]
        with_b = self.tokenizer(f"{VERDICT_PREFIX} B", add_special_tokens=False)["input_ids"]
        k = next(i for i, (x, y) in enumerate(zip(with_a, with_b)) if x != y)  # the answer's first token
        self.prefix, self.token_a, self.token_b = with_a[:k], with_a[k], with_b[k]
        self.max_tokens = int(getattr(self.model.config, "max_position_embeddings", 2048) or 2048)

    def judge(self, items: Sequence[Shown]) -> list[OrderAnswer]:
        answers: list[OrderAnswer] = []
        for start in range(0, len(items), self.batch_size):
            answers += self._batch(items[start:start + self.batch_size])
        return answers

    @torch.no_grad()
    def _batch(self, items: Sequence[Shown]) -> list[OrderAnswer]:
        rows = [(_chat_ids(self.tokenizer, judge_messages(self.rubric, i.prompt_messages, i.first, i.second))
                 + self.prefix)[-self.max_tokens:] for i in items]
        width = max(len(r) for r in rows)
        pad = self.tokenizer.pad_token_id
        ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows])  # left padding: the last column is real
        mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
        device = next(self.model.parameters()).device
        logits = self.model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits[:, -1, :].float()
        pair = torch.log_softmax(logits[:, [self.token_a, self.token_b]], dim=-1).exp().cpu()
        self.usage.requests += 1
        self.usage.prompt_tokens += sum(len(r) for r in rows)
        return [OrderAnswer(float(p[0]), "first" if p[0] > 0.5 else "second" if p[0] < 0.5 else "tie",
                            f"p(first better) = {float(p[0]):.3f}") for p in pair]

    def close(self) -> None:
        self.model = None


class RewardModelJudge:
    def __init__(self, model_dir: Path, cfg: JudgesConfig) -> None:
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        self.batch_size, self.usage = cfg.batch_size, Usage()
        # The directory is the operator's own (`rlhf judge add --model DIR`): its modeling code is trusted as theirs.
        self.tokenizer = AutoTokenizer.from_pretrained(str(model_dir), trust_remote_code=True)
        self.model = AutoModelForSequenceClassification.from_pretrained(str(model_dir), trust_remote_code=True)
        self.model.to(_device()).eval()
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token

    def judge(self, items: Sequence[Shown]) -> list[OrderAnswer]:
        keys = list(dict.fromkeys((render_conversation(i.prompt_messages), text)
                                  for i in items for text in (i.first, i.second)))
        prompts = {render_conversation(i.prompt_messages): i.prompt_messages for i in items}
        scores = dict(zip(keys, self._scores([prompts[k[0]] for k in keys], [k[1] for k in keys])))
        answers = []
        for i in items:
            conv = render_conversation(i.prompt_messages)
            first, second = scores[conv, i.first], scores[conv, i.second]
            p = float(torch.sigmoid(torch.tensor(first - second)))
            answers.append(OrderAnswer(p, "first" if first > second else "second" if first < second else "tie",
                                       f"reward {first:.3f} (first) vs {second:.3f} (second)"))
        return answers

    @torch.no_grad()
    def _scores(self, prompts: list[list[dict[str, str]]], responses: list[str]) -> list[float]:
        self.usage.requests += 1
        if hasattr(self.model, "score_texts"):  # this tool's export: the head pools the response tokens only
            return self.model.score_texts(self.tokenizer, prompts, responses, batch_size=self.batch_size)
        out: list[float] = []
        self.tokenizer.padding_side = "right"
        for start in range(0, len(prompts), self.batch_size):
            chats = [[*p, {"role": "assistant", "content": r}] for p, r in
                     zip(prompts[start:start + self.batch_size], responses[start:start + self.batch_size])]
            texts = [self.tokenizer.apply_chat_template(c, tokenize=False) if self.tokenizer.chat_template
                     else render_conversation(c) for c in chats]
            batch = self.tokenizer(texts, return_tensors="pt", padding=True, truncation=True)
            self.usage.prompt_tokens += int(batch["attention_mask"].sum())
            logits = self.model(**{k: v.to(self.model.device) for k, v in batch.items()}).logits
            out += logits[:, 0].float().cpu().tolist()
        return out

    def close(self) -> None:
        self.model = None


def build_hf_judge(name: str, settings: dict[str, Any], rubric: str | None, cfg: JudgesConfig, *,
                   max_requests: int, cache_dir: Path | None = None) -> HFJudge:
    from rlhf_core.models.loading import resolve_model_dir

    model = str(settings["model"])
    return HFJudge(resolve_model_dir(model, cache_dir or Path.home() / ".cache" / "rlhf-loop"), rubric, cfg)


def build_reward_model_judge(name: str, settings: dict[str, Any], rubric: str | None, cfg: JudgesConfig, *,
                             max_requests: int, cache_dir: Path | None = None) -> RewardModelJudge:
    return RewardModelJudge(Path(settings["model"]).expanduser(), cfg)
