"""`rlhf export-model` on the real default model (SmolLM2-135M-Instruct) after a real round: the merged
model's greedy tokens under plain transformers equal the loop's own (exact float32 passes), the PEFT
adapter gives the same, and the exported reward model scores as the loop does; with the default
settings on a CPU with native bfloat16, `--dtype auto` writes bfloat16 and its card says what merging into
bfloat16 rounds away. Slow; run with -s to see the comparison printed per prompt."""

from __future__ import annotations

import json

import pytest
from test_model_export import MERGED_SCRIPT, REWARD_SCRIPT, loop_view, rlhf, run_script

import storage
from rlhf_core.config import dump_config
from rlhf_core.model_export.request import ROUNDED
from rlhf_core.model_export.service import export_model
from rlhf_core.models.batching import build_sequences, prompt_token_ids, response_token_ids
from rlhf_core.simulator.demo import LoopSettings, prepare_workspace, run_loop
from rlhf_core.training.workspace_stack import activate_reward_model, load_stack

pytestmark = pytest.mark.slow

PROMPTS = ["say something about item 3", "Tell me a story.", "What is two plus two?", "Why is the sky blue?"]
GREEDY_TOKENS = 32
# Issue 37: a float32 export and the loop's bfloat16 decoding answered this alike for 16 tokens, then parted.
CAT = "Write one sentence about a cat."


def test_default_model_exports_the_loops_policy_and_reward_model(tmp_path) -> None:
    import torch

    ws = prepare_workspace(tmp_path / "ws")
    cfg = ws.config
    cfg.model.precision, cfg.model.generation = "fp32", "adapter"  # the loop's exact passes, to compare with
    cfg.sampling.max_new_tokens, cfg.sampling.per_prompt, cfg.sampling.batch_size = 24, 3, 12
    cfg.reward.epochs = 1
    cfg.loop.min_reward_confidence = 0.0  # 18 judgments cannot show a reward model beats chance: export mechanics
    cfg.policy.steps, cfg.policy.prompts_per_step, cfg.policy.group_size = 2, 2, 2
    cfg.policy.max_new_tokens, cfg.policy.update_epochs, cfg.policy.learning_rate = 16, 1, 1e-3
    ws.config_path.write_text(dump_config(cfg))
    settings = LoopSettings(rounds=1, judgments_per_round=18, annotators=2, gold="sentiment", eval_prompts=4)
    (report,) = list(run_loop(ws, settings, progress=False, log=lambda _m: None))
    assert report.policy_version == 1
    db = ws.database()
    try:
        stack = load_stack(ws)
        merged = export_model(ws, db, tmp_path / "merged")
        ours = loop_view(stack, db, 1, max_new_tokens=GREEDY_TOKENS)
        theirs = run_script(MERGED_SCRIPT, {"dir": str(merged.path), "prompts": PROMPTS,
                                            "max_new_tokens": GREEDY_TOKENS, "continuation": ours["continuation"]})
        tok = stack.tokenizer
        for prompt, a, b in zip(PROMPTS, theirs["greedy"], ours["greedy"]):
            print(f"{prompt!r}: exported {'==' if a == b else '!='} loop, {len(a)} tokens: "
                  f"{tok.decode(a, skip_special_tokens=True)!r}")
        assert theirs["greedy"] == ours["greedy"]
        worst = max(abs(x - y) for a, b in zip(theirs["logprobs"], ours["logprobs"]) for x, y in zip(a, b))
        print(f"largest log-prob difference on the teacher-forced continuation: {worst:.2e} nats")
        assert worst < 1e-3

        adapter = export_model(ws, db, tmp_path / "adapter", fmt="peft")
        via_peft = run_script(MERGED_SCRIPT, {"dir": str(adapter.path), "base": str(stack.model_dir), "peft": True,
                                              "prompts": PROMPTS, "max_new_tokens": GREEDY_TOKENS,
                                              "continuation": ours["continuation"]})
        assert via_peft["greedy"] == ours["greedy"]

        reward = export_model(ws, db, tmp_path / "reward", what="reward")
        responses = ["Sure! Here is a happy little story about a cat.", "No.", "Four.",
                     "Because of Rayleigh scattering."]
        scored = run_script(REWARD_SCRIPT, {"dir": str(reward.path), "prompts": PROMPTS, "responses": responses})
        activate_reward_model(stack, db)
        convs = [[{"role": "user", "content": p}] for p in PROMPTS]
        batch = build_sequences([prompt_token_ids(tok, c) for c in convs],
                                [response_token_ids(tok, r) for r in responses], tok.pad_token_id)
        with torch.no_grad():
            loop_scores = stack.reward(batch.input_ids, batch.attention_mask, batch.response_mask).tolist()
        print(f"rewards exported {[round(s, 5) for s in scored]} vs loop {[round(s, 5) for s in loop_scores]}")
        assert scored == pytest.approx(loop_scores, abs=1e-4)
        assert storage.current_reward_model(db).id == 1
        del stack
        bfloat16_export_answers_as_rlhf_generate(ws, db, tmp_path, float32_export=merged.path)
    finally:
        db.dispose()


def bfloat16_export_answers_as_rlhf_generate(ws, db, tmp_path, float32_export) -> None:  # noqa: ANN001
    """The default settings (`model.generation`, `model.precision` = "auto") decode in bfloat16 here, and
    `--dtype auto` exports in it. `rlhf generate` answers as the loop's own sampler does. The bfloat16 export
    merges the adapter into bfloat16 weights, which rounds small LoRA changes away, while the loop keeps the
    adapter beside them, so the export's greedy answers may part from the loop's: the card says so, and the
    comparison is printed (run with -s), not asserted. One prompt at a time: in bfloat16 a batch's answers
    depend on what else is in the batch."""
    import torch

    from rlhf_core.models.generation import native_bf16
    from rlhf_core.service.playground import try_versions

    if not native_bf16(torch.device("cpu")):
        pytest.skip("this CPU has no native bfloat16: the loop decodes in float32, compared above")
    ws.config.model.precision, ws.config.model.generation = "auto", "auto"
    ws.config_path.write_text(dump_config(ws.config))
    exported = export_model(ws, db, tmp_path / "merged-auto")
    assert exported.dtype == "bfloat16"
    tokens = 2 * GREEDY_TOKENS
    done = rlhf("generate", "-w", str(ws.root), "--greedy", "--json", "--max-new-tokens", str(tokens), CAT)
    assert done.returncode == 0, done.stderr[-3000:]
    (cat,) = [json.loads(line) for line in done.stdout.splitlines()]
    assert cat["dtype"] == "bfloat16"
    stack = load_stack(ws)  # what `rlhf generate` loads: the same settings, the same sampler
    assert stack.decoding_dtype == torch.bfloat16
    ours = [try_versions(stack, db, [[{"role": "user", "content": p}]], [1], greedy=True,
                         max_new_tokens=tokens)[0][0] for p in [CAT, *PROMPTS]]
    assert (ours[0].text, ours[0].tokens) == (cat["text"], cat["tokens"])
    request = {"prompts": [CAT, *PROMPTS], "max_new_tokens": tokens, "continuation": [1]}
    theirs = run_script(MERGED_SCRIPT, {"dir": str(exported.path), **request})
    float32 = run_script(MERGED_SCRIPT, {"dir": str(float32_export), **request})
    assert theirs["dtype"] == "bfloat16" and float32["dtype"] == "float32"
    for prompt, answer, ids, ids32 in zip([CAT, *PROMPTS], ours, theirs["greedy"], float32["greedy"]):
        print(f"{prompt!r}: bfloat16 export {'==' if ids == answer.token_ids else '!='} rlhf generate "
              f"({len(ids)} tokens: {answer.text!r}); float32 export {'==' if ids32 == answer.token_ids else '!='}")
    assert ROUNDED in (exported.path / "README.md").read_text()
