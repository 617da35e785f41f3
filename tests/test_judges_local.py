"""The local judge kinds on real models: `hf` on a tiny causal LM (the log-probabilities of A and B after
"Verdict:", batched, checked against a plain transformers forward pass), `reward-model` on this tool's own exported
reward model (its choices follow the loop's reward model), and a reward model trained on people's and the judge's
judgments with CrowdBT estimating the judge's reliability."""

from __future__ import annotations

import json
import math

import pytest
import torch

import storage
from rlhf_core.config import dump_config
from rlhf_core.judges.local_judges import build_hf_judge
from rlhf_core.judges.prompting import VERDICT_PREFIX, judge_messages
from rlhf_core.judges.verdicts import Shown
from rlhf_core.loop.worker import Worker
from rlhf_core.service.actor import Actor
from rlhf_core.service.judges import add_judge, request_judge_run
from rlhf_core.simulator.simulate import simulate_annotators
from rlhf_core.workspace import init_workspace

ACTOR = Actor("cli:test", "cli")


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_model_dir, tiny_rounds):  # noqa: ANN001, ANN201
    """A tiny-model workspace with sampled pairs, 12 simulated judgments and reward model v1."""
    ws, _ = init_workspace(tmp_path_factory.mktemp("judges") / "ws", model=str(tiny_model_dir))
    tiny_rounds(ws.config)
    ws.config.model.precision = "fp32"
    ws.config.judges.batch_size = 4
    ws.config_path.write_text(dump_config(ws.config))
    db = ws.database()
    storage.add_prompts(db, [[{"role": "user", "content": f"say something about item {i}"}] for i in range(16)])
    worker = Worker(ws, db, poll_seconds=0.01)
    assert worker.run_until_done(storage.enqueue_job(db, "sample", {"pairs": 16}).id, timeout=300).status == "done"
    simulate_annotators(db, annotators=2, judgments=12, gold="longer", seed=1, progress=False)
    done = worker.run_until_done(storage.enqueue_job(db, "train_rm").id, timeout=600)
    assert done.status == "done", done.error
    yield ws, db, worker
    db.dispose()


def test_an_hf_judge_reads_the_answer_tokens_log_probabilities_in_batches(trained, tiny_model_dir, one_thread) -> None:
    ws, db, _ = trained
    judge = build_hf_judge("tiny", {"model": str(tiny_model_dir)}, None, ws.config.judges, max_requests=100)
    convo = [{"role": "user", "content": "say something about item 3"}]
    items = [Shown(convo, "a short one", "a much longer answer here"), Shown(convo, "a much longer answer here",
                                                                              "a short one"),
             Shown([{"role": "user", "content": "hi"}], "x", "y")]
    batched = judge.judge(items)
    assert judge.usage.requests == 1 and judge.usage.prompt_tokens > 0  # one forward pass for the batch
    tok, model = judge.tokenizer, judge.model
    for item, answer in zip(items, batched):  # the same figure from one plain unbatched pass
        text = tok.apply_chat_template(judge_messages(None, item.prompt_messages, item.first, item.second),
                                       add_generation_prompt=True, tokenize=False)
        ids = tok(text, add_special_tokens=False)["input_ids"] + judge.prefix
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([ids])).logits[0, -1]
        p = torch.softmax(logits[[judge.token_a, judge.token_b]].float(), dim=-1)[0]
        assert answer.p_first == pytest.approx(float(p), abs=1e-4)
    assert tok.decode(judge.prefix).strip().startswith(VERDICT_PREFIX.rstrip(":"))


def test_an_hf_judge_and_a_reward_model_judge_run_as_jobs(trained, tiny_model_dir, tmp_path, one_thread) -> None:
    from rlhf_core.loop.pair_selection import response_member_scores
    from rlhf_core.model_export.service import export_model
    from rlhf_core.training.workspace_stack import activate_reward_model

    ws, db, worker = trained
    add_judge(db, "tiny-lm", "hf", ACTOR, model=str(tiny_model_dir))
    done = worker.run_until_done(request_judge_run(ws, db, "tiny-lm", ACTOR, pairs=6).id, timeout=300)
    assert done.status == "done", done.error
    rows = [r for r in storage.judgment_rows(db) if r.annotator == "tiny-lm"]
    assert len(rows) == 6 and all(0.0 <= r.confidence <= 1.0 for r in rows)
    assert all("p(first better)" in r.rationale for r in rows)

    exported = export_model(ws, db, tmp_path / "rm", what="reward").path
    add_judge(db, "rm", "reward-model", ACTOR, model=str(exported))
    done = worker.run_until_done(request_judge_run(ws, db, "rm", ACTOR, pairs=8).id, timeout=300)
    assert done.status == "done", done.error
    rows = [r for r in storage.judgment_rows(db) if r.annotator == "rm"]
    assert len(rows) == 8
    stack = worker.stack
    activate_reward_model(stack, db)
    convs = [r.prompt_messages for r in rows]
    a = response_member_scores(stack, convs, [r.text_a for r in rows], max_length=ws.config.reward.max_length)
    b = response_member_scores(stack, convs, [r.text_b for r in rows], max_length=ws.config.reward.max_length)
    for row, margin in zip(rows, (a.mean(dim=1) - b.mean(dim=1)).tolist()):
        if abs(margin) > 1e-3:  # the exported model is the loop's reward model: same side, same confidence
            assert row.choice == ("a" if margin > 0 else "b")
            assert row.confidence == pytest.approx(abs(2 / (1 + math.exp(-margin)) - 1), abs=0.02)
    assert json.loads(done.metrics_json)["left_picks"] * 2 == json.loads(done.metrics_json)["decisive_answers"]

    # The next reward model trains on people's and the judges' judgments; CrowdBT estimates the judges too.
    ws.config.reward.annotator_model = "crowd_bt"
    done = worker.run_until_done(storage.enqueue_job(db, "train_rm").id, timeout=600)
    assert done.status == "done", done.error
    metrics = json.loads(storage.current_reward_model(db).metrics_json)
    assert metrics["ai_judgments"] > 0
    assert {"tiny-lm", "rm"} <= set(metrics["annotators"]) and "sim-1" in metrics["annotators"]


@pytest.mark.slow
def test_the_embedded_smollm2_judges_as_an_hf_judge(tmp_path, one_thread) -> None:
    """The real default model through the `hf` kind: the path works; how well it judges is the benchmark's
    (`bench/reward_learning.py --hf-judge default`)."""
    from judge_helpers import seed_pairs, workspace

    from rlhf_core.judges.figures import judge_figures

    ws = workspace(tmp_path / "ws", batch_size=4)
    db = ws.database()
    seed_pairs(db, 4, controls=2)
    add_judge(db, "smollm2", "hf", ACTOR, model="default")
    done = Worker(ws, db, poll_seconds=0.01).run_until_done(request_judge_run(ws, db, "smollm2", ACTOR).id,
                                                            timeout=900)
    assert done.status == "done", done.error
    rows = [r for r in storage.judgment_rows(db, kinds=("train", "control")) if r.annotator == "smollm2"]
    assert len(rows) == 6 and all(0.0 <= r.confidence <= 1.0 for r in rows)
    figures = judge_figures(db)["smollm2"]
    assert figures["control_judgments"] == 2 and figures["left_bias"] is not None
    db.dispose()
