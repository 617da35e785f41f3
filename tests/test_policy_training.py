"""PPO and GRPO on the tiny model: rollouts, the reference, learning a synthetic reward, 4-bit, the service."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from rlhf_core.algorithms import gather_logprobs, kl_from_logits
from rlhf_core.config import Config, PolicyConfig
from rlhf_core.models.batching import left_pad, prompt_token_ids
from rlhf_core.models.generation import SamplingParams
from rlhf_core.models.loading import load_causal_lm
from rlhf_core.models.stack import ModelStack
from rlhf_core.training.grpo import grpo_update
from rlhf_core.training.policy import run_policy_training, train_policy
from rlhf_core.training.ppo import fresh_critic, make_optimizer
from rlhf_core.training.rollout import Rollout, generate_rollout, reward_model_scores, rollout_logprobs
from rlhf_core.training.workspace_stack import activate_policy, adapter_dir
from rlhf_core.workspace import Workspace
from storage import add_prompts, add_reward_model_version, training_logs

PROMPTS = [[{"role": "user", "content": f"tell me about topic {i}"}] for i in range(16)]
SUMMARY_KEYS = {"reward_mean", "kl_per_token", "kl_per_sequence", "entropy", "response_length", "clip_fraction",
                "steps", "seconds"}


@pytest.fixture(autouse=True)
def _one_thread(one_thread) -> None:  # noqa: ANN001 - conftest's fixture
    """Every test here runs with one torch thread."""


@pytest.fixture
def stack(tiny_model_dir: Path) -> ModelStack:
    return ModelStack.load(tiny_model_dir, device="cpu")


def lower_half_score(stack: ModelStack):
    """Synthetic reward: the share of response tokens from the lower half of the vocabulary, ~0.5 for the
    random (near-uniform) tiny model. Every token carries signal, so a few updates can move it."""
    half = len(stack.tokenizer) // 2

    def score(rollout: Rollout) -> torch.Tensor:
        return torch.tensor([sum(t < half for t in ids) / max(1, len(ids)) for ids in rollout.response_ids])

    return score


def policy_logp(stack: ModelStack, rollout: Rollout) -> torch.Tensor:
    with torch.no_grad(), stack.use("policy"):
        return stack.token_logprobs(rollout.batch.input_ids, rollout.batch.attention_mask)[0]


def test_rollout_keeps_eos_marks_truncation_and_scores_last_token(stack: ModelStack, monkeypatch) -> None:
    eos = stack.tokenizer.eos_token_id
    continuations = [[40, eos], [41, 42, 43, 44]]  # one ends its turn, one hits the limit

    def fake_sample(prompts, params, adapter="policy", **kwargs):
        assert adapter == "policy" and params.max_new_tokens == 4
        return [list(c) for c in continuations * (len(prompts) // 2)]

    monkeypatch.setattr(stack, "sample", fake_sample)
    rollout = generate_rollout(stack, PROMPTS[:2], samples_per_prompt=2, max_new_tokens=4, temperature=1.0)
    b = rollout.batch
    assert rollout.size == 4 and rollout.group_size == 2
    assert rollout.messages == [PROMPTS[0], PROMPTS[0], PROMPTS[1], PROMPTS[1]]
    assert rollout.response_ids == [[40, eos], [41, 42, 43, 44]] * 2
    assert rollout.truncated.tolist() == [False, True, False, True]
    assert rollout.response_lengths.tolist() == [2, 4, 2, 4]
    assert rollout.texts[0] == stack.tokenizer.decode([40])  # eos is not text
    assert b.attention_mask[:, 0].all()  # right-padded: training positions start at 0
    for i, (p, r) in enumerate(zip(rollout.prompt_ids, rollout.response_ids)):
        assert b.input_ids[i, len(p):len(p) + len(r)].tolist() == r
        assert b.response_mask[i].nonzero().flatten().tolist() == list(range(len(p) - 1, len(p) + len(r) - 1))
    # The score of each padded row is read at its own last token: the same as scoring it alone.
    batched = reward_model_scores(stack)(rollout)
    for i in range(rollout.size):
        ids = torch.tensor([rollout.prompt_ids[i] + rollout.response_ids[i]])
        with torch.no_grad():
            alone = stack.reward(ids, torch.ones_like(ids))
        torch.testing.assert_close(batched[i:i + 1], alone, atol=1e-5, rtol=1e-5)


def test_reference_is_the_base_model_and_policy_leaves_it_after_one_update(stack: ModelStack,
                                                                          tiny_model_dir: Path) -> None:
    torch.manual_seed(0)
    rollout = generate_rollout(stack, PROMPTS[:3], samples_per_prompt=2, max_new_tokens=6, temperature=1.0)
    b, mask = rollout.batch, rollout.batch.response_mask.bool()
    before = rollout_logprobs(stack, rollout)

    plain = load_causal_lm(tiny_model_dir, quantize_4bit=False, device=torch.device("cpu"))
    with torch.no_grad():
        logits = plain(input_ids=b.input_ids, attention_mask=b.attention_mask).logits[:, :-1]
    base_logp = gather_logprobs(logits.float(), b.input_ids[:, 1:])
    torch.testing.assert_close(before.ref_logp[mask], base_logp[mask], atol=1e-5, rtol=1e-5)
    assert torch.equal(before.old_logp, before.ref_logp)  # a fresh policy adapter is the identity

    cfg = PolicyConfig(learning_rate=1e-3, update_epochs=1, minibatch_size=8, group_size=2)
    optimizer = make_optimizer(stack, ("policy",), cfg)
    metrics = grpo_update(stack, rollout, lower_half_score(stack)(rollout), cfg, optimizer, logprobs=before)
    assert metrics["grad_norm_policy"] > 0

    after = rollout_logprobs(stack, rollout)
    assert torch.equal(after.ref_logp, before.ref_logp)  # the reference never trains
    assert (after.old_logp - after.ref_logp)[mask].abs().max() > 1e-4

    # The exact KL over the vocabulary at each response prefix (what the KL budget's stop reads): 0 before the
    # update, and after it the same as the policy's full logits against the base's, 0 outside the responses.
    assert before.kl_exact is not None and not before.kl_exact.any()
    with torch.no_grad(), stack.use("policy"):
        policy_logits = stack.model(input_ids=b.input_ids, attention_mask=b.attention_mask).logits[:, :-1]
    exact = kl_from_logits(policy_logits.float(), logits.float())
    torch.testing.assert_close(after.kl_exact[mask], exact[mask], atol=1e-5, rtol=1e-4)
    assert after.kl_exact[mask].min() > 0 and not after.kl_exact[~mask].any()


LEARNING_SETUPS = {
    # PPO sees one sample per prompt: more prompts per step and 4 epochs so the critic can keep up.
    "ppo": dict(prompts_per_step=16, update_epochs=4),
    "grpo": dict(prompts_per_step=4, group_size=4, update_epochs=2),
}


def direction_scores(stack: ModelStack) -> torch.Tensor:
    """A score per vocabulary token: the (standardised) projection of its embedding on the embeddings'
    first principal direction. A policy raises its mean by moving its final hidden state along one
    direction, which a LoRA can learn in a few steps; a random split of the vocabulary could not be
    learnt from on-policy samples of a near-uniform model in a test's budget."""
    emb = stack.model.get_input_embeddings().weight.detach().float()
    direction = torch.linalg.svd(emb - emb.mean(dim=0), full_matrices=False).Vh[0]
    proj = emb @ direction
    return proj / proj.std()


def expected_first_token_score(stack: ModelStack, scores: torch.Tensor) -> float:
    """E over the policy's next-token distribution of `scores`, at the first response token of each
    prompt: exact, so it measures where the policy moved without sampling noise."""
    prompts = [prompt_token_ids(stack.tokenizer, m) for m in PROMPTS]
    ids, mask = left_pad(prompts, stack.tokenizer.pad_token_id)
    stack.model.eval()
    with torch.no_grad(), stack.use("policy"):
        positions = (mask.cumsum(dim=-1) - 1).clamp(min=0)
        logits = stack.model(input_ids=ids, attention_mask=mask, position_ids=positions).logits[:, -1].float()
    return float((logits.softmax(dim=-1) @ scores).mean())


def direction_score(stack: ModelStack, scores: torch.Tensor | None = None):
    """Rollout score: the mean `direction_scores` of a response's tokens (continuous, so never a tie)."""
    scores = direction_scores(stack) if scores is None else scores

    def score(rollout: Rollout) -> torch.Tensor:
        return torch.tensor([float(scores[ids].mean()) if ids else 0.0 for ids in rollout.response_ids])

    return score


@pytest.mark.parametrize("algo", ["ppo", "grpo"])
def test_policy_learns_synthetic_reward_with_bounded_kl(stack: ModelStack, algo: str) -> None:
    scores = direction_scores(stack)
    score = direction_score(stack, scores)
    cfg = PolicyConfig(learning_rate=1e-3, steps=10, max_new_tokens=8, minibatch_size=8, kl_beta=0.05, seed=0,
                       **LEARNING_SETUPS[algo])
    fresh_critic(stack)
    before = expected_first_token_score(stack, scores)
    history = train_policy(stack, PROMPTS, score, cfg, algo=algo, progress=False).history
    after = expected_first_token_score(stack, scores)
    # About +0.16 for both algorithms and seeds 0-2 when written (rollouts sample the full distribution).
    assert after > before + 0.1, (before, after)
    # The reference is near uniform (entropy ≈ ln |V|), so a policy that moved all its mass onto one
    # side would sit at ln 2 ≈ 0.69 nats/token. Ten small steps with the KL penalty must stay
    # well short of that collapse.
    assert max(row["kl_per_token"] for row in history) < 0.5 * math.log(2)
    assert all(row["approx_kl"] < 0.05 for row in history)  # each update stayed in PPO's trust region


def _bnb_repacked(stack: ModelStack) -> int:
    return sum(bool(getattr(getattr(m.weight, "quant_state", None), "packing_format_for_cpu", False))
               for m in stack.model.modules() if hasattr(m, "support_avx512bf16_for_cpu"))


@pytest.mark.parametrize("algo", ["ppo", "grpo"])
def test_4bit_base_trains_policy_lora(tiny_model_dir: Path, algo: str) -> None:
    stack = ModelStack.load(tiny_model_dir, device="cpu", quantize_4bit=True)
    assert stack.quantized
    initial = {n: p.detach().clone() for n, p in stack.model.named_parameters() if ".policy." in n}
    cfg = PolicyConfig(learning_rate=1e-3, steps=1, prompts_per_step=2, group_size=2, max_new_tokens=6,
                       minibatch_size=4, update_epochs=1)
    row = train_policy(stack, PROMPTS, lower_half_score(stack), cfg, algo=algo, progress=False).history[0]

    required = ["reward_mean", "kl_per_token", "entropy", "clip_fraction", "approx_kl", "grad_norm_policy"]
    required += ["value_loss", "grad_norm_value"] if algo == "ppo" else ["kl_k3"]
    assert all(row[k] is not None and math.isfinite(row[k]) for k in required), row
    assert row["grad_norm_policy"] > 0
    changed = [n for n, p in stack.model.named_parameters() if ".policy." in n and not torch.equal(p, initial[n])]
    assert changed
    assert _bnb_repacked(stack) == 0


def test_4bit_gradients_unchanged_by_an_eval_pass(tiny_model_dir: Path) -> None:
    """bitsandbytes may repack CPU 4-bit weights for an inference kernel without a backward on the first
    eval-mode pass; the LoRA gradients after generating must match those before."""
    stack = ModelStack.load(tiny_model_dir, device="cpu", quantize_4bit=True)
    params = stack.trainable_parameters("policy")
    torch.manual_seed(1)
    with torch.no_grad():
        for n, p in stack.model.named_parameters():
            if ".policy." in n and "lora_B" in n:
                p.normal_(0, 0.05)  # non-zero B so gradients reach every layer's A as well
    ids = torch.randint(10, 400, (2, 12))

    def grads() -> list[torch.Tensor]:
        stack.model.train()
        for p in params:
            p.grad = None
        with stack.use("policy"):
            stack.token_logprobs(ids, torch.ones_like(ids))[0].sum().backward()
        return [p.grad.clone() for p in params]

    before = grads()
    stack.sample(ids.tolist(), SamplingParams(max_new_tokens=2, temperature=0.0))
    after = grads()
    assert all(torch.equal(a, b) for a, b in zip(before, after))


@pytest.fixture
def workspace(tmp_path: Path, tiny_model_dir: Path, sqlite_db) -> Workspace:
    config = Config()
    config.model.name = str(tiny_model_dir)
    config.policy = PolicyConfig(learning_rate=1e-3, steps=2, prompts_per_step=2, group_size=2, max_new_tokens=6,
                                 minibatch_size=4, update_epochs=1)
    add_prompts(sqlite_db, PROMPTS[:3], split="train")
    add_prompts(sqlite_db, PROMPTS[3:4], split="eval")
    return Workspace(root=tmp_path / "ws", config=config)


def test_run_policy_training_without_reward_model_is_an_error(workspace, sqlite_db, stack) -> None:
    with pytest.raises(ValueError, match=r"train a reward model first \(rlhf train-rm\)"):
        run_policy_training(workspace, sqlite_db, stack, algo="ppo", progress=False)


def test_run_policy_training_records_versions_that_reload_exactly(workspace, sqlite_db, stack, tiny_model_dir):
    rm_dir = stack.save_adapter("reward", workspace.root / "adapters" / "reward-v0001")
    add_reward_model_version(sqlite_db, adapter_path=str(rm_dir), trained_on=0, heldout_accuracy=None,
                             heldout_loss=None, metrics={})
    progress: list[float] = []
    v1 = run_policy_training(workspace, sqlite_db, stack, algo="ppo", job_id=None, progress=False,
                             on_progress=lambda fraction, message: progress.append(fraction))
    assert (v1.id, v1.parent_id, v1.round, v1.algorithm) == (1, 0, 1, "ppo")
    assert progress == [0.5, 1.0]
    metrics = json.loads(v1.metrics_json)
    assert SUMMARY_KEYS | {"value_loss"} <= metrics.keys() and metrics["steps"] == 2
    out = adapter_dir(workspace, "policy", 1)
    assert v1.adapter_path == str(out)
    assert (out / "adapter.safetensors").is_file() and (out / "value" / "adapter.safetensors").is_file()
    assert [row["step"] for row in training_logs(sqlite_db, phase="policy")] == [0, 1]

    torch.manual_seed(3)
    probe = generate_rollout(stack, PROMPTS[:2], samples_per_prompt=2, max_new_tokens=5, temperature=1.0)
    reloaded = ModelStack.load(tiny_model_dir, device="cpu")
    assert activate_policy(reloaded, sqlite_db) == 1
    assert torch.equal(policy_logp(reloaded, probe), policy_logp(stack, probe))
    with torch.no_grad(), stack.reference():
        ref = stack.token_logprobs(probe.batch.input_ids, probe.batch.attention_mask)[0]
    assert not torch.equal(policy_logp(stack, probe), ref)  # the saved policy is not the base

    # The next round continues v1 (not the base) even if the stack's adapter was reset meanwhile.
    stack.reset_adapter("policy")
    v2 = run_policy_training(workspace, sqlite_db, stack, algo="grpo", progress=False)
    assert (v2.id, v2.parent_id, v2.round, v2.algorithm) == (2, 1, 2, "grpo")
    round2 = training_logs(sqlite_db, phase="policy")[2:]
    assert [row["step"] for row in round2] == [0, 1]
    assert round2[0]["kl_per_token"] != 0.0  # a base-model start has exactly zero k1


def test_previous_policy_as_reference(workspace, sqlite_db, stack, tiny_model_dir) -> None:
    """policy.reference = "previous": the round's KL is measured against the policy it starts from."""
    rm_dir = stack.save_adapter("reward", workspace.root / "adapters" / "reward-v0001")
    add_reward_model_version(sqlite_db, adapter_path=str(rm_dir), trained_on=0, heldout_accuracy=None,
                             heldout_loss=None, metrics={})
    workspace.config.policy.reference = "previous"
    run_policy_training(workspace, sqlite_db, stack, algo="grpo", progress=False)  # from v0: the reference is the base
    assert stack.reference_path is None
    run_policy_training(workspace, sqlite_db, stack, algo="grpo", progress=False)
    assert stack.reference_path == adapter_dir(workspace, "policy", 1)
    logs = training_logs(sqlite_db, phase="policy")
    assert logs[0]["kl_per_token"] == 0.0  # round 1 starts at the base, its reference
    assert logs[2]["kl_per_token"] == 0.0  # round 2 starts at v1, its reference
    assert logs[3]["kl_per_token"] != 0.0

    torch.manual_seed(3)
    probe = generate_rollout(stack, PROMPTS[:2], samples_per_prompt=2, max_new_tokens=5, temperature=1.0)
    v1 = ModelStack.load(tiny_model_dir, device="cpu")
    activate_policy(v1, sqlite_db, 1)
    with torch.no_grad(), stack.reference():
        ref = stack.token_logprobs(probe.batch.input_ids, probe.batch.attention_mask)[0]
    assert torch.equal(ref, policy_logp(v1, probe))  # the reference is exactly v1
    assert not any(p.requires_grad for p in stack._reference_params)  # and never trains
    assert all(".reference." not in n for n, p in stack.model.named_parameters() if p.requires_grad)

    stack.set_reference(None)
    with torch.no_grad(), stack.reference():
        base = stack.token_logprobs(probe.batch.input_ids, probe.batch.attention_mask)[0]
    with torch.no_grad(), v1.reference():
        assert torch.equal(base, v1.token_logprobs(probe.batch.input_ids, probe.batch.attention_mask)[0])


def test_reference_must_name_an_existing_version(workspace, sqlite_db, stack) -> None:
    rm_dir = stack.save_adapter("reward", workspace.root / "adapters" / "reward-v0001")
    add_reward_model_version(sqlite_db, adapter_path=str(rm_dir), trained_on=0, heldout_accuracy=None,
                             heldout_loss=None, metrics={})
    workspace.config.policy.reference = "7"
    with pytest.raises(ValueError, match="there is no policy version 7"):
        run_policy_training(workspace, sqlite_db, stack, algo="grpo", progress=False)


def test_max_kl_per_token_ends_the_updates_without_touching_the_policy(stack: ModelStack) -> None:
    cfg = PolicyConfig(learning_rate=1e-3, steps=5, prompts_per_step=2, group_size=2, max_new_tokens=6,
                       minibatch_size=4, update_epochs=1, max_kl_per_token=1e-6)
    result = train_policy(stack, PROMPTS, direction_score(stack), cfg, algo="grpo", progress=False)
    # Step 0 starts at the base (KL 0) and updates; step 1 has drifted (the budget is checked against the
    # exact KL over the vocabulary, never negative, so any update shows).
    first, stopped = result.history
    assert first["kl_stop"] == 0.0 and first["kl_exact_per_token"] == 0.0 and first["clip_fraction"] is not None
    assert stopped["kl_stop"] == 1.0 and stopped["kl_exact_per_token"] > 1e-6 and "clip_fraction" not in stopped
    assert result.summary["stopped_at_kl"] == 1.0 and result.summary["steps"] == 2

    state = {k: v.clone() for k, v in stack._adapter_state("policy").items()}
    again = train_policy(stack, PROMPTS, direction_score(stack), cfg, algo="grpo", progress=False)
    assert len(again.history) == 1 and again.history[0]["kl_stop"] == 1.0  # already beyond the bound
    assert all(torch.equal(v, stack._adapter_state("policy")[k]) for k, v in state.items())


def test_each_round_draws_with_its_own_seed(workspace, sqlite_db, stack, monkeypatch) -> None:
    """A fixed seed would replay the same prompts and samples every round."""
    import rlhf_core.training.policy as policy_training

    rm_dir = stack.save_adapter("reward", workspace.root / "adapters" / "reward-v0001")
    add_reward_model_version(sqlite_db, adapter_path=str(rm_dir), trained_on=0, heldout_accuracy=None,
                             heldout_loss=None, metrics={})
    seeds: list[int] = []
    real = policy_training.train_policy

    def spy(stack, prompts, score_fn, cfg, **kwargs):
        seeds.append(cfg.seed)
        return real(stack, prompts, score_fn, cfg, **kwargs)

    monkeypatch.setattr(policy_training, "train_policy", spy)
    for _ in range(2):
        run_policy_training(workspace, sqlite_db, stack, algo="grpo", progress=False)
    assert seeds == [workspace.config.policy.seed, workspace.config.policy.seed + 1]
