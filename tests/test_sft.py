"""Stage 1, supervised fine-tuning: the masked loss by hand (prompt tokens count for nothing; a packed batch
equals its sequences side by side), the packed model pass against separate sequences, SFT on the tiny model
lowering the held-out NLL of demonstrations and recording an "sft" version with its curves, and
`policy.reference = "sft"` anchoring later rounds to that version (its log-probs are the reference's)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

import storage
from rlhf_core.algorithms import masked_nll_sum, perplexity, sft_loss
from rlhf_core.config import Config, ConfigError, PolicyConfig, SFTConfig, validate
from rlhf_core.loop.worker import Worker
from rlhf_core.models.batching import build_sequences
from rlhf_core.models.stack import ModelStack
from rlhf_core.registry import JOB_KINDS, training_kinds
from rlhf_core.simulator.simulate import simulate_annotators
from rlhf_core.training.policy import reference_adapter, run_policy_training
from rlhf_core.training.rollout import generate_rollout, rollout_logprobs
from rlhf_core.training.sft import (
    NoDemonstrationsError,
    SFTExample,
    answer_nll,
    encode_demonstration,
    latest_sft_version,
    run_sft_training,
    train_sft,
)
from rlhf_core.training.workspace_stack import activate_policy
from rlhf_core.workspace import Workspace, init_workspace

NAN = float("nan")


@pytest.fixture(autouse=True)
def _one_thread(one_thread) -> None:  # noqa: ANN001 - conftest's fixture
    """Every test here runs with one torch thread."""


# -- the loss, by hand -------------------------------------------------------------------------------------
def test_sft_loss_is_the_mean_nll_of_answer_tokens_and_ignores_the_prompt() -> None:
    # Row: two prompt positions (one NaN), then answer log-probs -0.5 and -1.0, then padding.
    logp = torch.tensor([[-9.0, NAN, -0.5, -1.0, NAN]])
    mask = torch.tensor([[0, 0, 1, 1, 0]])
    assert sft_loss(logp, mask).item() == pytest.approx(0.75)  # (0.5 + 1.0) / 2
    total, count = masked_nll_sum(logp, mask)
    assert (total.item(), count.item()) == (1.5, 2.0)
    # Prompt tokens contribute nothing, to the value or to the gradient.
    changed = torch.tensor([[-0.1, -50.0, -0.5, -1.0, 3.0]], requires_grad=True)
    loss = sft_loss(changed, mask)
    loss.backward()
    assert loss.item() == pytest.approx(0.75)
    assert changed.grad.tolist() == [[0.0, 0.0, -0.5, -0.5, 0.0]]  # d/dlogp of −Σ/2 on the answer only
    assert sft_loss(logp, torch.zeros_like(mask)).item() == 0.0  # an empty mask: 0, not NaN


def test_a_packed_batch_gives_the_loss_of_its_sequences_side_by_side() -> None:
    # Two sequences: answers (-0.5, -1.0) and (-2.0). Side by side (padded rows) or packed into one row.
    separate = sft_loss(torch.tensor([[-7.0, -0.5, -1.0], [-3.0, -2.0, NAN]]), torch.tensor([[0, 1, 1], [0, 1, 0]]))
    packed = sft_loss(torch.tensor([[-7.0, -0.5, -1.0, -3.0, -2.0]]), torch.tensor([[0, 1, 1, 0, 1]]))
    assert separate.item() == pytest.approx(3.5 / 3) and packed.item() == pytest.approx(3.5 / 3)
    # A mean of per-sequence means would weigh the short answer's token double: (0.75 + 2.0) / 2 = 1.375.
    assert separate.item() != pytest.approx(1.375)
    assert perplexity(math.log(2.0)) == pytest.approx(2.0)


# -- the model pass ------------------------------------------------------------------------------------------
@pytest.fixture
def stack(tiny_model_dir: Path) -> ModelStack:
    return ModelStack.load(tiny_model_dir, device="cpu")


def test_packed_answers_score_as_separate_sequences(stack: ModelStack, perturb) -> None:  # noqa: ANN001
    """Two answers packed behind one prompt (and a third prompt in its own row) give the NLL that each
    prompt + answer sequence gives alone through `token_logprobs`."""
    perturb(stack, "policy")
    prompt = [{"role": "user", "content": "Name a fruit."}]
    examples = [SFTExample(prompt, "A banana, ripe and yellow.", 1), SFTExample(prompt, "An apple.", 1),
                SFTExample([{"role": "user", "content": "Say hi."}], "Hello there!", 2)]
    encoded = [encode_demonstration(stack.tokenizer, ex, 64) for ex in examples]
    with torch.no_grad(), stack.use("policy"):
        packed, tokens = answer_nll(stack, encoded)
        batch = build_sequences([e.prompt for e in encoded], [e.answer for e in encoded], stack.tokenizer.pad_token_id)
        logp, _ = stack.token_logprobs(batch.input_ids, batch.attention_mask, response_mask=batch.response_mask)
    separate, count = masked_nll_sum(logp, batch.response_mask)
    assert tokens == int(count) == sum(len(e.answer) for e in encoded)
    assert packed.item() == pytest.approx(separate.item(), rel=1e-4)


def test_encoding_keeps_the_answer_start_and_the_prompt_end(stack: ModelStack) -> None:
    long_prompt = [{"role": "user", "content": "word " * 200 + "QUESTION?"}]
    encoded = encode_demonstration(stack.tokenizer, SFTExample(long_prompt, "answer " * 200, 1), 40)
    assert len(encoded.prompt) + len(encoded.answer) <= 40
    assert encoded.answer[-1] == stack.tokenizer.eos_token_id  # the end of turn is learned too
    assert len(encoded.prompt) >= 20 and "QUESTION" in stack.tokenizer.decode(encoded.prompt)


# -- training ------------------------------------------------------------------------------------------------
def fruit_demonstrations(n: int) -> list[storage.DemonstrationSpec]:
    """Prompts about numbered items, each answered in one fixed style the tiny model can learn."""
    return [storage.DemonstrationSpec([{"role": "user", "content": f"Tell me about item {i}."}],
                                      f"Item {i} is a ripe yellow banana.") for i in range(n)]


def test_training_lowers_the_heldout_nll(stack: ModelStack) -> None:
    examples = [SFTExample(s.messages, s.text, i) for i, s in enumerate(fruit_demonstrations(12))]
    cfg = SFTConfig(learning_rate=5e-3, epochs=3, batch_size=4, max_length=64)
    rows: list[dict] = []
    result = train_sft(stack, examples[:9], examples[9:], cfg, on_step=rows.append, progress=False)
    s = result.summary
    assert s["heldout_nll"] < s["heldout_nll_before"] - 0.5, s
    assert s["best_epoch"] >= 1 and s["steps"] == 9 == len(rows)
    assert s["tokens"] == sum(row["tokens"] for row in result.history) > 0
    assert [row.get("heldout_nll") is not None for row in result.history] == [False, False, True] * 3
    assert all(not p.requires_grad for p in stack.model.parameters())  # frozen again


def test_early_stopping_keeps_the_start_when_training_only_hurts(stack: ModelStack) -> None:
    """A policy that already knows the held-out answer, then training on unlike answers at a learning rate
    that overfits: epoch 0 is kept, and the policy adapter is exactly where it started."""
    heldout = [SFTExample([{"role": "user", "content": "other"}], "The weather is calm today.", 99)]
    train_sft(stack, heldout * 8, [], SFTConfig(learning_rate=5e-3, epochs=4, batch_size=4, max_length=48),
              progress=False)
    train = [SFTExample([{"role": "user", "content": f"q {i}"}], "zzz qqq zzz qqq", i) for i in range(8)]
    start = {k: v.clone() for k, v in stack._adapter_state("policy").items()}
    result = train_sft(stack, train, heldout, SFTConfig(learning_rate=5e-2, epochs=2, batch_size=4, max_length=48),
                       progress=False)
    assert result.summary["best_epoch"] == 0 and result.summary["train_nll"] is None
    assert result.summary["heldout_nll"] == pytest.approx(result.summary["heldout_nll_before"])
    after = stack._adapter_state("policy")
    assert all(torch.equal(start[k], after[k]) for k in start)


@pytest.fixture
def workspace(tmp_path: Path, tiny_model_dir: Path, sqlite_db: storage.Database) -> Workspace:
    config = Config()
    config.model.name = str(tiny_model_dir)
    config.sft = SFTConfig(learning_rate=5e-3, epochs=2, batch_size=4, max_length=64, eval_fraction=0.25)
    config.policy = PolicyConfig(learning_rate=1e-3, steps=1, prompts_per_step=2, group_size=2, max_new_tokens=6,
                                 minibatch_size=4, update_epochs=1, algo="grpo")
    return Workspace(root=tmp_path / "ws", config=config)


def test_sft_service_records_an_sft_version_with_its_figures_and_curves(workspace, sqlite_db, stack) -> None:
    with pytest.raises(NoDemonstrationsError, match="rlhf demos import"):
        run_sft_training(workspace, sqlite_db, stack, progress=False)
    storage.add_demonstrations(sqlite_db, fruit_demonstrations(12), source="test")
    version = run_sft_training(workspace, sqlite_db, stack, progress=False)
    assert (version.id, version.algorithm, version.parent_id, version.round) == (1, "sft", 0, 1)
    assert (Path(version.adapter_path) / "adapter.safetensors").is_file()
    metrics = json.loads(version.metrics_json)
    assert metrics["heldout_nll"] < metrics["heldout_nll_before"]
    assert metrics["demonstrations_train"] == 9 and metrics["demonstrations_heldout"] == 3
    assert metrics["kl_base_per_token"] > 0 and metrics["response_length"] > 0  # fresh samples, rounds' terms
    logs = storage.training_logs(sqlite_db, phase="sft")
    assert len(logs) == metrics["steps"] == 6 and sum(r.get("heldout_nll") is not None for r in logs) == 2
    assert latest_sft_version(sqlite_db).id == 1


def test_reference_sft_anchors_the_kl_to_the_sft_version(workspace, sqlite_db, stack) -> None:
    with pytest.raises(ValueError, match="no SFT version yet"):
        reference_adapter(sqlite_db, "sft", storage.current_policy(sqlite_db))
    storage.add_demonstrations(sqlite_db, fruit_demonstrations(12), source="test")
    sft = run_sft_training(workspace, sqlite_db, stack, progress=False)
    assert reference_adapter(sqlite_db, "sft", sft) == Path(sft.adapter_path)

    # The reference's log-probs are the SFT version's (and not the base's).
    stack.set_reference(reference_adapter(sqlite_db, "sft", sft))
    activate_policy(stack, sqlite_db, 0)  # the policy adapter elsewhere, to show the reference is its own
    rollout = generate_rollout(stack, [[{"role": "user", "content": "Tell me about item 3."}]], samples_per_prompt=2,
                               max_new_tokens=6, temperature=1.0)
    lp = rollout_logprobs(stack, rollout)
    activate_policy(stack, sqlite_db, sft.id)
    as_policy = rollout_logprobs(stack, rollout)
    mask = rollout.batch.response_mask.bool()
    assert torch.allclose(lp.ref_logp[mask], as_policy.old_logp[mask], atol=1e-5)
    assert lp.base_logp is not None and not torch.allclose(lp.ref_logp[mask], lp.base_logp[mask], atol=1e-3)

    # A GRPO round with reference "sft": starts at the SFT version, logs the KL to the base beside it.
    workspace.config.policy.reference = "sft"
    storage.add_prompts(sqlite_db, [[{"role": "user", "content": f"topic {i}"}] for i in range(3)])
    rm_dir = stack.save_adapter("reward", workspace.root / "adapters" / "reward-v0001")
    storage.add_reward_model_version(sqlite_db, adapter_path=str(rm_dir), trained_on=0, heldout_accuracy=None,
                                     heldout_loss=None, metrics={})
    v2 = run_policy_training(workspace, sqlite_db, stack, algo="grpo", progress=False)
    assert v2.parent_id == sft.id and v2.round == 2
    assert stack.reference_path == Path(sft.adapter_path)
    row = storage.training_logs(sqlite_db, phase="policy")[0]
    assert row["kl_base_per_token"] != pytest.approx(row["kl_per_token"], abs=1e-6)


def test_config_takes_reference_sft_and_checks_the_new_settings() -> None:
    config = Config()
    config.policy.reference = "sft"
    config.labeling.demonstrations = "every_n"
    validate(config)
    for section, key, value, words in (("labeling", "demonstrations", "always", "labeling.demonstrations"),
                                       ("labeling", "demonstration_every", 0, "demonstration_every"),
                                       ("sft", "eval_fraction", 1.0, "sft.eval_fraction"),
                                       ("sft", "epochs", 0, "sft.epochs"),
                                       ("policy", "reference", "sfts", "policy.reference")):
        bad = Config()
        setattr(getattr(bad, section), key, value)
        with pytest.raises(ConfigError, match=words):
            validate(bad)


# -- the job table, `rlhf train-sft` as a job, and loop.sft_first ----------------------------------------------
def test_train_sft_is_a_job_kind_of_the_one_table(workspace, sqlite_db, stack) -> None:
    assert "train_sft" in training_kinds()  # the worker tells the queue these run one at a time
    assert "train_sft" in JOB_KINDS and JOB_KINDS["train_sft"].trains
    storage.add_demonstrations(sqlite_db, fruit_demonstrations(8), source="test")
    worker = Worker(workspace, sqlite_db, stack_factory=lambda _ws: stack, poll_seconds=0.01)
    done = worker.run_until_done(storage.enqueue_job(sqlite_db, "train_sft", {"algo": "sft"}).id, timeout=300)
    assert done.status == "done", done.error
    metrics = json.loads(done.metrics_json)
    assert metrics["policy_version"] == 1 and metrics["heldout_nll"] < metrics["heldout_nll_before"]
    assert {row["phase"] for row in storage.training_logs(sqlite_db, job_id=done.id)} == {"sft"}
    bogus = worker.run_until_done(storage.enqueue_job(sqlite_db, "nonsense", {}).id, timeout=60)
    assert bogus.status == "failed"
    assert "known: sample, train_rm, train_policy, round, eval_batch, train_sft" in bogus.error


def test_a_round_with_sft_first_fine_tunes_before_the_reward_model(tmp_path, tiny_model_dir, tiny_rounds) -> None:
    ws, _ = init_workspace(tmp_path / "ws", model=str(tiny_model_dir))
    tiny_rounds(ws.config)
    ws.config.loop.sft_first = True
    ws.config.policy.reference = "sft"
    ws.config.sft = SFTConfig(learning_rate=5e-3, epochs=1, batch_size=4, max_length=64)
    db = ws.database()
    storage.add_prompts(db, [[{"role": "user", "content": f"say something about item {i}"}] for i in range(12)])
    worker = Worker(ws, db, poll_seconds=0.01)
    assert worker.run_until_done(storage.enqueue_job(db, "sample", {"pairs": 10}).id, timeout=300).status == "done"
    simulate_annotators(db, annotators=2, judgments=10, gold="longer", seed=1, progress=False)
    failed = worker.run_until_done(storage.enqueue_job(db, "round", {}).id, timeout=300)
    assert failed.status == "failed" and "loop.sft_first is on but there are no demonstrations" in failed.error
    storage.add_demonstrations(db, fruit_demonstrations(8), source="test")
    done = worker.run_until_done(storage.enqueue_job(db, "round", {}).id, timeout=600)
    assert done.status == "done", done.error
    versions = storage.list_policies(db)
    assert [(v.id, v.algorithm, v.parent_id) for v in versions] == [(0, "base", None), (1, "sft", 0), (2, "grpo", 1)]
    assert json.loads(versions[2].metrics_json)["sft_version"] == 1
    assert {row["phase"] for row in storage.training_logs(db, job_id=done.id)} == {"sft", "reward", "policy"}
    # The next round has its SFT version: it does not fine-tune again.
    simulate_annotators(db, annotators=2, judgments=6, gold="longer", seed=2, progress=False)
    again = worker.run_until_done(storage.enqueue_job(db, "round", {}).id, timeout=600)
    assert again.status == "done", again.error
    assert [v.algorithm for v in storage.list_policies(db)] == ["base", "sft", "grpo", "grpo"]
    db.dispose()


def test_reward_use_edits_trains_on_edited_over_original(workspace, sqlite_db, stack) -> None:
    """Demonstrations written as edits of a response are preferences "edited > original" for the reward model,
    with `reward.use_edits` only (off by default: not yet measured to help)."""
    import random

    from rlhf_core.training.reward_data import NotEnoughJudgmentsError
    from rlhf_core.training.reward_service import run_reward_training

    alice = storage.create_annotator(sqlite_db, "alice", "password123")
    storage.add_prompts(sqlite_db, [[{"role": "user", "content": f"Name fruit {i}."}] for i in range(6)])
    for prompt in storage.list_prompts(sqlite_db):
        storage.record_generations(sqlite_db, prompt_id=prompt.id, policy_version_id=0, gen_params={},
                                   responses=[("An apple.", 3), ("A pear.", 3)], pairs=[(0, 1)])
    while (shown := storage.next_pair_for(sqlite_db, alice.id, rng=random.Random(0))) is not None:
        token = storage.serve_token(shown.pair_id, shown.served_at)
        storage.record_demonstration(sqlite_db, alice.id, token=token, text=shown.left_text + " A banana is better.",
                                     start_side="left")
        storage.skip_pair(sqlite_db, pair_id=shown.pair_id, annotator_id=alice.id)
    assert storage.demonstration_counts(sqlite_db)["edits"] == 6
    workspace.config.reward.epochs = 1
    with pytest.raises(NotEnoughJudgmentsError):  # no judgments, and edits are off by default
        run_reward_training(workspace, sqlite_db, stack, progress=False)
    workspace.config.reward.use_edits = True
    version = run_reward_training(workspace, sqlite_db, stack, progress=False)
    metrics = json.loads(version.metrics_json)
    # Edits alone (no judgments): split like prior judgments alone, so all six are trained on or held out.
    assert metrics["edit_preferences"] == 6 and metrics["n_train"] + metrics["n_heldout"] == 6


# -- the simulated demonstrator and the loop's stage 1 (bench/loop_efficacy.py --sft N) ----------------------------
def test_the_simulated_demonstrator_writes_the_golds_best_sample_or_its_rewrite(stack: ModelStack) -> None:
    from rlhf_core.config import SamplingConfig
    from rlhf_core.loop.sampling import generate_responses
    from rlhf_core.simulator.demo import simulated_demonstrations
    from rlhf_core.simulator.gold import get_gold, get_gold_rewrite

    conversations = [[{"role": "user", "content": f"Tell me about item {i}."}] for i in range(3)]
    sampling = SamplingConfig(max_new_tokens=12, temperature=1.0, top_p=1.0, batch_size=16)
    torch.manual_seed(7)
    answers = simulated_demonstrations(stack, conversations, get_gold("longer"), samples=4, sampling=sampling)
    torch.manual_seed(7)
    samples = generate_responses(stack, [c for c in conversations for _ in range(4)], max_new_tokens=12,
                                 temperature=1.0, top_p=1.0, batch_size=16)
    for i, answer in enumerate(answers):
        texts = [r[0] for r in samples[4 * i:4 * i + 4] if r[0].strip()]
        assert answer == max(texts, key=len)  # the best by the gold (longer), the first of equals
    rewrite = get_gold_rewrite("keyword", keyword="you")
    assert rewrite([], "Plain text.") == "Plain text. I hope this helps, you!"
    assert rewrite([], "Thank you.") == "Thank you."
    assert get_gold_rewrite("shorter")([], "One. Two.") == "One." and get_gold_rewrite("sentiment") is None


def test_the_loop_runs_stage_1_as_round_0(tmp_path: Path, tiny_model_dir: Path) -> None:
    from rlhf_core.simulator.demo import LoopSettings, prepare_workspace, run_loop
    from rlhf_core.simulator.gold import get_gold_rewrite

    ws = prepare_workspace(tmp_path / "ws", model=str(tiny_model_dir))
    ws.config.sampling.max_new_tokens = 8
    ws.config.policy.max_new_tokens = 8
    ws.config.sft = SFTConfig(learning_rate=5e-3, epochs=1, batch_size=4, max_length=64)
    settings = LoopSettings(rounds=0, gold="shorter", eval_prompts=4, sft_demonstrations=6, demonstration_samples=2)
    (report,) = list(run_loop(ws, settings, progress=False, log=lambda _m: None))
    assert (report.round, report.algo, report.policy_version, report.judgments) == (0, "sft", 1, 0)
    assert 0.0 <= report.gold_win_rate <= 1.0 and report.kl_per_token is not None
    db = ws.database()
    rows = storage.demonstration_rows(db)
    assert len(rows) == 6 and {r.source for r in rows} == {"simulated demonstrator (shorter)"}
    shorter = get_gold_rewrite("shorter")
    assert all(r.text == shorter([], r.text) for r in rows)  # the gold's own rewrite: one sentence each
    db.dispose()
