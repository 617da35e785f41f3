"""Judge kinds: what an AI judge is (an annotator account of kind `ai` whose judgments go into the same table as
people's). One entry each; `rlhf judge add --kind`, its checks, the worker's judge job, the operator page's judge
panel and the docs read this table.

- `build(name, settings, rubric, judges_config, *, max_requests, cache_dir) -> rlhf_core.judges.verdicts.PairJudge`
  makes the judge that answers for a pair shown in one order (a run shows each pair in both orders);
- `check(settings) -> None` raises `rlhf_core.judges.settings.JudgeConfigError` (one sentence) for settings that
  cannot work, when the judge is added;
- `needs`: the settings `rlhf judge add` must be given for the kind; `takes`: every setting it accepts (others
  are refused with one line).
"""

from __future__ import annotations

from dataclasses import dataclass

from rlhf_core.registry.base import Registry

# Every setting a judge kind may take, with the `rlhf judge add` option that sets it.
JUDGE_SETTINGS = {"base_url": "--base-url", "model": "--model", "api_key_env": "--api-key-env", "rubric": "--rubric"}


@dataclass(frozen=True)
class JudgeKind:
    name: str
    help: str  # one line, for the CLI's help and the docs
    build: str  # "module:function"
    check: str  # "module:function"
    needs: tuple[str, ...]
    takes: tuple[str, ...]


JUDGE_KINDS: Registry[JudgeKind] = Registry("judge kind", [
    JudgeKind("openai", "any OpenAI-compatible chat endpoint (vLLM, llama.cpp, Ollama, a hosted API) through the "
                        "official openai client; the rubric and the pair in, A, B or tie out",
              build="rlhf_core.judges.openai_judge:build_openai_judge",
              check="rlhf_core.judges.openai_judge:check_openai_settings",
              needs=("base_url", "model"), takes=("base_url", "model", "api_key_env", "rubric")),
    JudgeKind("hf", "a local causal LM directory, prompted like `openai`, deciding by the log-probabilities of the "
                    "answer tokens A and B (no sampling), batched",
              build="rlhf_core.judges.local_judges:build_hf_judge",
              check="rlhf_core.judges.local_judges:check_hf_settings",
              needs=("model",), takes=("model", "rubric")),
    JudgeKind("reward-model", "a sequence-classification reward-model directory (`rlhf export-model --what reward` "
                              "too): the better-scored response wins, the score margin is the confidence",
              build="rlhf_core.judges.local_judges:build_reward_model_judge",
              check="rlhf_core.judges.local_judges:check_reward_model_settings",
              needs=("model",), takes=("model",)),
])
