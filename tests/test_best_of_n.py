"""Best-of-N on a tiny model: N seeded samples of a policy version, scored by the reward model, the process reward
model or TRL-signature reward functions (TRL's own `accuracy_reward` among them, with a prompt file's `solution`
column), the highest kept; refusals before any model work; `rlhf generate --best-of N` end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import storage
from rlhf_core.config import Config, dump_config
from rlhf_core.models.process_reward import PRM
from rlhf_core.models.stack import LoraSettings, ModelStack
from rlhf_core.registry import BEST_OF_N_SCORERS
from rlhf_core.service.best_of_n import (
    BestOfNError,
    ScoringContext,
    best_of_n,
    functions_from_references,
    pick_best,
)
from rlhf_core.training.prm_service import PRMScorer
from rlhf_core.workspace import Workspace, init_workspace

ROOT = Path(__file__).resolve().parent.parent
PROMPTS = [[{"role": "user", "content": "tell me about the river"}], [{"role": "user", "content": "and the cat?"}]]


def longest(prompts: list, completions: list, **columns: object) -> list[float]:
    """A TRL-signature reward function: the completion's length in characters."""
    return [float(len(c[0]["content"])) for c in completions]


def only_second_prompt(prompts: list, completions: list, **columns: object) -> list[float | None]:
    """Applies to the prompt about the cat alone (None elsewhere): minus the length."""
    return [-float(len(c[0]["content"])) if "cat" in p[-1]["content"] else None
            for p, c in zip(prompts, completions)]


@pytest.fixture(autouse=True)
def _one_thread(one_thread) -> None:  # noqa: ANN001 - conftest's fixture
    """One torch thread (see conftest)."""


@pytest.fixture
def stack(tiny_model_dir: Path) -> ModelStack:
    return ModelStack.load(tiny_model_dir, device="cpu")


@pytest.fixture
def ctx(tmp_path: Path, tiny_model_dir: Path, sqlite_db: storage.Database, stack: ModelStack) -> ScoringContext:
    config = Config()
    config.model.name = str(tiny_model_dir)
    return ScoringContext(Workspace(root=tmp_path / "ws", config=config), sqlite_db, stack)


def test_the_highest_score_wins_and_none_ranks_last() -> None:
    assert pick_best([0.1, 0.7, 0.7, None]) == 1
    assert pick_best([None, -3.0, None]) == 1
    assert pick_best([None, None]) == 0
    assert list(BEST_OF_N_SCORERS) == ["rm", "prm", "functions"]


def test_best_of_n_by_reward_functions(ctx: ScoringContext) -> None:
    ctx.functions = functions_from_references(["test_best_of_n:longest", "test_best_of_n:only_second_prompt"])
    results = best_of_n(ctx, PROMPTS, n=4, by="functions", max_new_tokens=12, seed=3)
    assert [len(r.candidates) for r in results] == [4, 4] and all(r.version == 0 for r in results)
    first, second = results
    assert [c.score for c in first.candidates] == [float(len(c.text)) for c in first.candidates]
    assert first.best.text == max((c.text for c in first.candidates), key=len)
    assert [c.score for c in second.candidates] == [0.0] * 4  # longest + (-length): the sum of the two
    assert len({c.text for c in first.candidates}) > 1  # sampled, not N copies of one answer
    again = best_of_n(ctx, PROMPTS, n=4, by="functions", max_new_tokens=12, seed=3)
    assert [c.text for c in again[0].candidates] == [c.text for c in first.candidates]  # seeded


def test_best_of_n_by_the_configured_reward_functions(ctx: ScoringContext) -> None:
    """Without --function, the workspace's [[reward.functions]] score, weighted and summed as in training."""
    from rlhf_core.config import RewardFunctionConfig

    ctx.ws.config.reward.functions = [
        RewardFunctionConfig(kind="length_window", min_tokens=1, max_tokens=4, name="short", weight=2.0),
        RewardFunctionConfig(kind="answer_match", column="answer", weight=1.0)]
    ctx.functions = None
    ctx.__post_init__()
    results = best_of_n(ctx, PROMPTS, n=3, by="functions", columns=[{"answer": "7"}, {"answer": "8"}],
                        max_new_tokens=12, seed=5)
    for result in results:
        for c in result.candidates:
            assert c.score is not None and 0.0 <= c.score <= 3.0
        assert result.best.score == max(c.score for c in result.candidates)
    # By hand: a 2-word answer inside the window and with the right number scores 2 * 1 + 1 = 3.
    assert ctx.functions(prompts=PROMPTS[:1] * 2, completions=[[{"role": "assistant", "content": "It is 7"}],
                                                                [{"role": "assistant", "content": "It is 9"}]],
                         answer=["7", "7"]) == [3.0, 2.0]


def test_trl_accuracy_reward_works_unchanged_with_a_solution_column(ctx: ScoringContext) -> None:
    pytest.importorskip("math_verify")
    ctx.functions = functions_from_references(["trl.rewards:accuracy_reward"])
    results = best_of_n(ctx, PROMPTS[:1], n=3, by="functions", columns=[{"solution": "$42$"}], max_new_tokens=8)
    assert [c.score for c in results[0].candidates] == [0.0, 0.0, 0.0]  # a tiny random model never says 42
    # The same function on hand-made completions: the right one scores 1.
    assert ctx.functions(prompts=PROMPTS[:1] * 2, completions=[[{"role": "assistant", "content": r"\boxed{42}"}],
                                                                [{"role": "assistant", "content": r"\boxed{41}"}]],
                         solution=["$42$", "$42$"]) == [1.0, 0.0]


def test_best_of_n_by_the_reward_model_and_by_the_prm(ctx: ScoringContext, stack: ModelStack, perturb) -> None:  # noqa: ANN001
    with pytest.raises(BestOfNError, match="--by rm needs a reward model"):
        best_of_n(ctx, PROMPTS, n=2, by="rm")
    perturb(stack, "reward", seed=1)
    rm = stack.save_adapter("reward", ctx.ws.adapters_dir / "reward-v0001")
    storage.add_reward_model_version(ctx.db, adapter_path=str(rm), trained_on=0, heldout_accuracy=None,
                                     heldout_loss=None, metrics={})
    stack.reset_adapter("reward")  # best-of-N loads the current reward model itself
    (by_rm,) = best_of_n(ctx, PROMPTS[:1], n=4, by="rm", max_new_tokens=10, seed=1)
    scores = [c.score for c in by_rm.candidates]
    assert len(set(scores)) == 4 and by_rm.chosen == scores.index(max(scores))

    with pytest.raises(BestOfNError, match="--by prm needs a process reward model"):
        best_of_n(ctx, PROMPTS, n=2, by="prm")
    stack.enable_prm(LoraSettings())
    perturb(stack, PRM, seed=2)
    prm = stack.save_adapter(PRM, ctx.ws.adapters_dir / "prm-v0001")
    storage.add_prm_version(ctx.db, adapter_path=str(prm), trained_on=0, heldout_step_accuracy=None, metrics={})
    stack.reset_adapter(PRM)
    (by_prm,) = best_of_n(ctx, PROMPTS[:1], n=4, by="prm", max_new_tokens=10, seed=1)
    assert [c.text for c in by_prm.candidates] == [c.text for c in by_rm.candidates]  # the same seeded samples
    expected = PRMScorer(ctx.ws, stack)(PROMPTS[:1] * 4, [c.text for c in by_prm.candidates])
    assert [c.score for c in by_prm.candidates] == pytest.approx(expected)
    assert by_prm.chosen == pick_best(expected)


def test_requests_out_of_bounds_are_refused(ctx: ScoringContext) -> None:
    with pytest.raises(BestOfNError, match="between 1 and 64"):
        best_of_n(ctx, PROMPTS, n=0, by="functions")
    with pytest.raises(BestOfNError, match="unknown best-of-N scorer 'votes'"):
        best_of_n(ctx, PROMPTS, n=2, by="votes")
    with pytest.raises(BestOfNError, match="--by functions needs reward functions"):
        best_of_n(ctx, PROMPTS, n=2, by="functions")
    with pytest.raises(BestOfNError, match="--function nowhere:fn: cannot be loaded"):
        functions_from_references(["nowhere:fn"])


def test_rlhf_generate_best_of_n(tmp_path: Path, tiny_model_dir: Path) -> None:
    ws, _ = init_workspace(tmp_path / "ws", model=str(tiny_model_dir))
    ws.config.sampling.max_new_tokens = 8
    ws.config_path.write_text(dump_config(ws.config), encoding="utf-8")
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps({"prompt": "tell me about the river", "solution": "$42$"}) + "\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "tests"), str(ROOT)])}

    def rlhf(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "rlhf_core", *args, "--workspace", str(ws.root)],
                              capture_output=True, text=True, env=env, timeout=300, cwd=ROOT)

    refused = rlhf("generate", "--best-of", "3", "--by", "rm", "hello")
    assert refused.returncode == 1 and refused.stderr.strip() == (
        "error: --by rm needs a reward model (`rlhf train-rm`) first")
    done = rlhf("generate", "--best-of", "3", "--by", "functions", "--function", "test_best_of_n:longest",
                "--file", str(prompts), "--json")
    assert done.returncode == 0, done.stderr
    (line,) = done.stdout.strip().splitlines()
    out = json.loads(line)
    assert out["by"] == "functions" and len(out["candidates"]) == 3
    assert out["text"] == out["candidates"][out["chosen"]]["text"]
    assert out["candidates"][out["chosen"]]["score"] == max(c["score"] for c in out["candidates"])
