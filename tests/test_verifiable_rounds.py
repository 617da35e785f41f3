"""Reward functions in the loop on a tiny model: a verifiable round (GRPO on the functions alone, no judgment, no
reward model; pairs still sampled for spot checks), the functions combined with the reward model in a standard
round, each component's curve in the training log and TensorBoard, the combination math through the score
function, DPO's pairs ranked by the functions, the refusals, and a round that goes on while responses attack the
python_tests sandbox."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import storage
from rlhf_core.config import RewardFunctionConfig
from rlhf_core.loop.worker import Worker
from rlhf_core.rewards import RewardFunction
from rlhf_core.service.actor import ActionRefused, Actor
from rlhf_core.service.jobs import request_job
from rlhf_core.simulator.simulate import simulate_annotators
from rlhf_core.training.reward_scores import CombinedScore
from rlhf_core.workspace import init_workspace

LENGTH = RewardFunctionConfig(kind="length_window", min_tokens=2, max_tokens=5, name="length")
ANSWER = RewardFunctionConfig(kind="answer_match", column="answer", weight=2.0)


@pytest.fixture
def tiny_ws(tmp_path: Path, tiny_model_dir: Path, tiny_rounds):  # noqa: ANN001
    ws, _ = init_workspace(tmp_path / "ws", model=str(tiny_model_dir))
    tiny_rounds(ws.config)
    ws.config.reward.functions = [LENGTH, ANSWER]
    db = ws.database()
    storage.add_prompts(db, [[{"role": "user", "content": f"what is {i} plus {i}?"}] for i in range(12)],
                        columns=[{"answer": 2 * i} for i in range(12)])
    yield ws, db
    db.dispose()


def run_round(ws, db, params: dict | None = None):  # noqa: ANN001, ANN201
    job = request_job(ws, db, "round", params or {}, Actor.shell())
    done = Worker(ws, db, poll_seconds=0.01).run_until_done(job.id, timeout=600)
    assert done.status == "done", done.error
    return done


def test_a_verifiable_round_needs_no_judgment_and_logs_each_component(tiny_ws) -> None:
    ws, db = tiny_ws
    ws.config.loop.mode = "verifiable"
    ws.config.logging.report_to = "tensorboard"
    done = run_round(ws, db)
    assert storage.current_policy(db).id == 1 and storage.current_reward_model(db) is None
    metrics = json.loads(storage.get_policy(db, 1).metrics_json)
    assert metrics["mode"] == "verifiable" and "rewards/length" in metrics and "rewards/answer_match" in metrics
    steps = [r for r in storage.training_logs(db, job_id=done.id) if r["phase"] == "policy"]
    assert len(steps) == ws.config.policy.steps
    for row in steps:
        assert 0.0 <= row["rewards/length"] <= 1.0 and row["rewards/answer_match"] in (0.0, 0.5, 1.0)
    assert storage.open_pair_count(db) > 0  # the labeling page still gets pairs, for spot checks
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    (run,) = (ws.root / ws.config.logging.dir).iterdir()
    events = EventAccumulator(str(run))
    events.Reload()
    assert {"policy/rewards/length", "policy/rewards/answer_match"} <= set(events.Tags()["scalars"])


def test_functions_combine_with_the_reward_model_in_a_standard_round(tiny_ws) -> None:
    ws, db = tiny_ws
    ws.config.reward.combine = "normalize_then_sum"
    worker = Worker(ws, db, poll_seconds=0.01)
    assert worker.run_until_done(storage.enqueue_job(db, "sample", {"pairs": 12}).id, timeout=300).status == "done"
    simulate_annotators(db, annotators=2, judgments=12, gold="longer", seed=1, progress=False)
    done = run_round(ws, db, {"algo": "ppo"})
    steps = [r for r in storage.training_logs(db, job_id=done.id) if r["phase"] == "policy"]
    assert steps and all({"rewards/reward_model", "rewards/length", "rewards/answer_match"} <= set(r) for r in steps)
    assert storage.current_reward_model(db) is not None


def rollout_of(texts: list[str], messages: list[list[dict[str, str]]]) -> SimpleNamespace:
    return SimpleNamespace(texts=texts, messages=messages, response_ids=[[1] * len(t.split()) for t in texts],
                           batch=SimpleNamespace(input_ids=torch.zeros(1)))


def test_the_combined_score_is_the_weighted_sum_of_its_components() -> None:
    """Reward model (1, 2, 3); a function (1, 0, n/a) at weight 2: sum (3, 2, 3); normalize_then_sum
    (-1.2247 + 2, 0 - 2, 1.2247)."""
    messages = [[{"role": "user", "content": f"q{i}"}] for i in range(3)]
    columns = {storage.canonical_messages(m): ({"answer": 7} if i < 2 else {}) for i, m in enumerate(messages)}
    answer = RewardFunction("answer", 2.0, lambda completions, answer, **_: [
        None if a is None else float(c[0]["content"] == str(a)) for c, a in zip(completions, answer)], ("answer",), "x")
    model = lambda rollout: torch.tensor([1.0, 2.0, 3.0])  # noqa: E731
    rollout = rollout_of(["7", "8", "9"], messages)
    summed = CombinedScore([answer], columns, "sum", model, 1.0)
    assert summed(rollout).tolist() == [3.0, 2.0, 3.0]
    assert summed.last_metrics == {"rewards/reward_model": 2.0, "rewards/answer": 0.5}
    normalized = CombinedScore([answer], columns, "normalize_then_sum", model, 1.0)(rollout)
    assert normalized.tolist() == pytest.approx([0.77526, -2.0, 1.22474], abs=1e-4)
    alone = CombinedScore([answer], columns, "sum")(rollout)  # verifiable: no model
    assert alone.tolist() == [2.0, 0.0, 0.0]


def test_dpo_pairs_ranked_by_the_functions(tiny_ws) -> None:
    from dataclasses import replace

    from rlhf_core.training.dpo import reward_ranked_pairs
    from rlhf_core.training.workspace_stack import load_stack

    ws, db = tiny_ws
    stack = load_stack(ws)
    longest = RewardFunction("chars", 1.0, lambda completions, **_: [float(len(c[0]["content"])) for c in completions],
                             (), "x")
    prompts = [storage.prompt_messages(p) for p in storage.list_prompts(db)[:4]]
    cfg = replace(ws.config.policy, group_size=4, max_new_tokens=12)
    pairs, skipped = reward_ranked_pairs(stack, prompts, CombinedScore([longest], {}, "sum"), cfg)
    assert len(pairs) + skipped == 4 and pairs
    decode = stack.tokenizer.decode
    for pair in pairs:
        assert len(decode(pair.chosen, skip_special_tokens=True)) > len(decode(pair.rejected, skip_special_tokens=True))


def test_requests_are_refused_with_one_line_naming_the_entry(tiny_ws) -> None:
    ws, db = tiny_ws
    ws.config.loop.mode = "verifiable"
    ws.config.reward.functions = [LENGTH, RewardFunctionConfig(kind="python_tests", column="tests")]
    with pytest.raises(ActionRefused, match=r"^\[\[reward.functions\]\] #2 \(\"python_tests\", python_tests\) reads "
                                            r"the prompt column 'tests', which no train prompt has \(their columns: "
                                            r"answer\)"):
        request_job(ws, db, "round", {}, Actor.shell())
    ws.config.reward.functions = [LENGTH]
    with pytest.raises(ActionRefused, match=r"scores the policy's own samples, which dpo does not draw"):
        request_job(ws, db, "round", {"algo": "dpo"}, Actor.shell())


ATTACKS = {
    "infinite loop": "```python\nwhile True:\n    pass\n```",
    "fork bomb": "```python\nimport os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n"
                 "        pass\n```",
    "memory hog": "```python\nblock = bytearray(4 * 1024 ** 3)\n```",
    "write outside": "```python\nopen({outside!r}, 'w').write('escaped')\n```",
    "network": "```python\nimport socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=2)\n```",
    "honest": "```python\ndef double(x):\n    return 2 * x\n```",
}


def test_a_round_goes_on_while_responses_attack_the_sandbox(tiny_ws, tmp_path: Path, monkeypatch) -> None:
    """The round's rollouts are replaced by attacks on the sandbox (each a response's code): every attack is
    contained, the honest response passes, and the round makes its version."""
    import rlhf_core.training.policy as policy_module

    ws, db = tiny_ws
    ws.config.loop.mode = "verifiable"
    ws.config.policy.prompts_per_step, ws.config.policy.group_size, ws.config.policy.steps = 3, 2, 1
    ws.config.reward.functions = [RewardFunctionConfig(kind="python_tests", column="tests", timeout_seconds=3,
                                                       memory_mb=256)]
    storage.add_prompts(db, [[{"role": "user", "content": f"write double(x), take {i}"}] for i in range(3)],
                        columns=[{"tests": ["assert double(2) == 4"]}] * 3)
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    server.settimeout(0.5)
    outside = tmp_path / "escaped.txt"
    attacks = [a.format(outside=str(outside), port=server.getsockname()[1]) for a in ATTACKS.values()]
    real = policy_module.generate_rollout
    seen: list[list[float]] = []

    def attacked(stack, prompts, **kwargs):  # noqa: ANN001, ANN202
        rollout = real(stack, prompts, **kwargs)
        rollout.texts = [attacks[i % len(attacks)] for i in range(rollout.size)]
        return rollout

    score = CombinedScore.__call__

    def recorded(self, rollout):  # noqa: ANN001, ANN202
        out = score(self, rollout)
        seen.append(out.tolist())
        return out

    monkeypatch.setattr(policy_module, "generate_rollout", attacked)
    monkeypatch.setattr(CombinedScore, "__call__", recorded)
    pid = os.getpid()
    # Only the prompts with tests may be drawn: the others would score None.
    with db.session() as s:
        for prompt in s.exec(storage.Prompt.__table__.select()):
            if "tests" not in prompt.columns_json:
                s.exec(storage.Prompt.__table__.update().where(storage.Prompt.id == prompt.id).values(split="eval"))
    try:
        run_round(ws, db)
        with pytest.raises(TimeoutError):
            server.accept()
    finally:
        server.close()
    assert os.getpid() == pid and not outside.exists()
    assert storage.current_policy(db).id == 1
    assert seen == [[0.0, 0.0, 0.0, 0.0, 0.0, 1.0]]
