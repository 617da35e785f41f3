"""The model card (`README.md` in the Hub's format) every export directory gets: a YAML header the Hub
reads (base_model, library_name, tags, pipeline_tag; the license is left for the user, who knows the
base model's and the data's), then what the version is, in a table, and how to load it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

DEFAULT_BASE_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"  # the embedded default model's Hub name


@dataclass
class CardFacts:
    """What a card says. `facts`: (label, value) rows in the order shown; values already formatted."""

    title: str
    what: str  # "policy" or "reward"
    fmt: str  # "merged", "peft" or "reward"
    base_model: str
    algorithm: str | None
    facts: list[tuple[str, str]] = field(default_factory=list)
    usage: str = ""


def _tags(facts: CardFacts) -> list[str]:
    tags = ["rlhf", "rlhf-loop", "human-feedback"]
    if facts.algorithm and facts.algorithm != "base":
        tags.append(facts.algorithm)
    if facts.fmt == "peft":
        tags.append("lora")
    if facts.what == "reward":
        tags += ["reward-model", "bradley-terry"]
    return tags


def model_card(facts: CardFacts) -> str:
    """The card's text: YAML front matter, a facts table, and the loading snippet."""
    header: dict[str, Any] = {
        "base_model": facts.base_model,
        "library_name": "peft" if facts.fmt == "peft" else "transformers",
        "tags": _tags(facts),
        "pipeline_tag": "text-classification" if facts.what == "reward" else "text-generation",
    }
    rows = "\n".join(f"| {label} | {value} |" for label, value in facts.facts)
    return (
        "---\n" + yaml.safe_dump(header, sort_keys=False)
        + "# license: set the license of the base model and of your data here\n---\n\n"
        + f"# {facts.title}\n\nExported by rlhf-loop (`rlhf export-model`).\n\n"
        + "| | |\n| --- | --- |\n" + rows + "\n\n## Use\n\n" + facts.usage.strip() + "\n"
    )


def pct(value: float | None, n: int | None = None) -> str:
    if value is None:
        return "not measured"
    return f"{100 * value:.1f}%" + (f" ({n} judgments)" if n is not None else "")


def num(value: Any, digits: int = 4) -> str:
    return "n/a" if not isinstance(value, int | float) or isinstance(value, bool) else f"{value:.{digits}g}"


MERGED_USAGE = """```python
from transformers import AutoModelForCausalLM, AutoTokenizer

model = AutoModelForCausalLM.from_pretrained("{dir}", dtype="auto")  # the saved dtype (see Dtype above)
tokenizer = AutoTokenizer.from_pretrained("{dir}")
ids = tokenizer.apply_chat_template([{{"role": "user", "content": "Hello!"}}], add_generation_prompt=True,
                                    return_tensors="pt", return_dict=True)
out = model.generate(**ids)  # generation_config.json holds the loop's sampling settings
print(tokenizer.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True))
```
vLLM, TGI and llama.cpp's `convert_hf_to_gguf.py` read this directory as they read any model of its architecture."""

PEFT_USAGE = """```python
from peft import PeftModel
from transformers import AutoModelForCausalLM

base = AutoModelForCausalLM.from_pretrained("{base}")
model = PeftModel.from_pretrained(base, "{dir}")
```
{quantized}"""

REWARD_USAGE = """```python
from transformers import AutoModelForSequenceClassification, AutoTokenizer

model = AutoModelForSequenceClassification.from_pretrained("{dir}", trust_remote_code=True)
tokenizer = AutoTokenizer.from_pretrained("{dir}")
rewards = model.score_texts(tokenizer, ["How do I boil an egg?"], ["Put it in boiling water for 8 minutes."])
```
The modeling code (`rlhf_reward.py`) pools the response's hidden states, so scoring needs to know which
tokens are the response: use `score_texts`, or pass `response_mask` to `forward`. As a TRL reward
function (GRPOTrainer's `reward_funcs`): `rlhf_core.reward_function("{dir}")`, or the same three lines
around `score_texts` in your own function."""
