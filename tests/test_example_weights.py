"""Per-example weights in the reward model's Bradley-Terry loss (PreferenceExample.weight): a weighted mean
normalised so that all-equal weights give exactly the unweighted loss, checked by hand and on the tiny model."""

from __future__ import annotations

import json
import math
import random
from dataclasses import replace
from pathlib import Path

import pytest
import torch

import storage
from rlhf_core.algorithms.preference import normalized_example_weights, weighted_bt_loss
from rlhf_core.config import RewardConfig
from rlhf_core.models.stack import ModelStack
from rlhf_core.models.tiny import _OBJECTS, _SUBJECTS, _VERBS
from rlhf_core.training.reward_data import PreferenceExample, encode_pair, prior_examples
from rlhf_core.training.reward_model import evaluate_reward_model, train_reward_model
from storage import PriorRow

CPU = torch.device("cpu")
WORDS = sorted({w for phrase in _SUBJECTS + _VERBS + _OBJECTS for w in phrase.split()})
FAST = RewardConfig(learning_rate=1e-3, epochs=3, batch_size=8, max_length=128, eval_fraction=0.25, seed=0,
                    early_stopping=False)


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def test_normalized_weights_by_hand() -> None:
    assert torch.equal(normalized_example_weights(torch.ones(5)), torch.ones(5))
    assert torch.equal(normalized_example_weights(torch.full((3,), 2.5)), torch.ones(3))
    torch.testing.assert_close(normalized_example_weights(torch.tensor([1.0, 3.0])), torch.tensor([0.5, 1.5]))
    torch.testing.assert_close(normalized_example_weights(torch.tensor([0.0, 2.0])), torch.tensor([0.0, 2.0]))
    for bad in ([1.0, -1.0], [0.0, 0.0], [1.0, math.nan], [math.inf, 1.0]):
        with pytest.raises(ValueError):
            normalized_example_weights(torch.tensor(bad))


def test_weighted_loss_is_the_weighted_mean_and_all_ones_is_todays_loss() -> None:
    # Gaps 2 and 0: −log σ(2) = 0.126928, −log σ(0) = ln 2 = 0.693147.
    r_c, r_r = torch.tensor([[2.0], [0.0]]), torch.zeros(2, 1)
    counts = torch.ones(1, 2)
    plain = weighted_bt_loss(r_c, r_r, counts, normalizer=counts.sum(dim=1))
    assert math.isclose(float(plain), (0.126928 + 0.693147) / 2, rel_tol=1e-5)
    ones = counts * normalized_example_weights(torch.ones(2))
    assert torch.equal(weighted_bt_loss(r_c, r_r, ones, normalizer=counts.sum(dim=1)), plain)
    # Weights 1 and 3: (1·0.126928 + 3·0.693147) / 4 = 0.551592, the weighted mean.
    weighted = counts * normalized_example_weights(torch.tensor([1.0, 3.0]))
    loss = weighted_bt_loss(r_c, r_r, weighted, normalizer=counts.sum(dim=1))
    assert math.isclose(float(loss), (0.126928 + 3 * 0.693147) / 4, rel_tol=1e-5)


def examples(n_prompts: int, seed: int, *, marker: str, weight: float = 1.0
             ) -> list[PreferenceExample]:
    """The response containing `marker` is chosen; the other is word salad."""
    rng = random.Random(seed)
    out = []
    for pid in range(n_prompts):
        question = " ".join(rng.choice(WORDS) for _ in range(4)) + "?"
        good = [rng.choice(WORDS) for _ in range(rng.randint(8, 14))]
        good.insert(rng.randint(0, len(good)), marker)
        bad = " ".join(rng.choice(WORDS) for _ in range(rng.randint(9, 15)))
        chosen, rejected = " ".join(good), bad
        out.append(PreferenceExample([{"role": "user", "content": question}], chosen, rejected, None,
                                     pid + 1000 * seed, weight=weight))
    return out


def test_weight_is_carried_into_encoded_pairs(tiny_model_dir: Path) -> None:
    stack = ModelStack.load(tiny_model_dir, device=CPU)
    ex = examples(1, 0, marker="banana", weight=0.25)[0]
    assert encode_pair(stack.tokenizer, ex, 64).weight == 0.25
    assert encode_pair(stack.tokenizer, replace(ex, weight=1.0), 64).weight == 1.0


def test_equal_weights_train_exactly_as_unweighted_and_weights_decide_the_direction(tiny_model_dir: Path) -> None:
    right = examples(24, 1, marker="banana")
    wrong = [replace(e, chosen=e.rejected, rejected=e.chosen) for e in right]  # the same pairs, other way round
    heldout = examples(16, 3, marker="banana")

    def train(data: list[PreferenceExample]):  # noqa: ANN202
        stack = ModelStack.load(tiny_model_dir, device=CPU)
        result = train_reward_model(stack, data, [], FAST, progress=False)
        return result, evaluate_reward_model(stack, heldout, FAST)[0]

    plain, _ = train(right + wrong)
    doubled, _ = train([replace(e, weight=2.0) for e in right + wrong])
    assert [r["loss"] for r in doubled.history] == [r["loss"] for r in plain.history]
    # Every pair judged both ways round: the weights alone say which way the marker points (equal
    # weights gave 0.31 on these held-out pairs; 0.875 and 0.125 with these weights when written).
    _, right_wins = train(right + [replace(e, weight=0.1) for e in wrong])
    _, wrong_wins = train([replace(e, weight=0.1) for e in right] + wrong)
    assert right_wins >= 0.75 and wrong_wins <= 0.25


# --------------------------------------------------------------------------- prior judgments in the service


def test_prior_examples_carry_their_weight_times_the_setting() -> None:
    rows = [PriorRow(id=i, prompt_id=i, prompt_messages=[{"role": "user", "content": "q"}], chosen="a",
                     rejected="b", source="hh", weight=w) for i, w in enumerate((1.0, 0.5, 0.0))]
    assert [e.weight for e in prior_examples(rows, 2.0)] == [2.0, 1.0]  # weight 0: left out
    assert prior_examples(rows, 0.0) == []


def test_a_prior_alone_orders_held_out_pairs_and_imported_pairs_train_by_setting(tiny_model_dir: Path, sqlite_db,
                                                                                 tmp_path: Path) -> None:
    from rlhf_core.training.reward_data import NotEnoughJudgmentsError
    from rlhf_core.training.reward_service import run_reward_training
    from rlhf_core.workspace import init_workspace

    ws, _ = init_workspace(tmp_path / "ws", db_url=sqlite_db.url)
    ws.config.reward = replace(FAST, epochs=4, early_stopping=True)
    stack = ModelStack.load(tiny_model_dir, device=CPU)
    heldout = examples(16, 3, marker="banana")
    untrained = evaluate_reward_model(stack, heldout, FAST)[0]
    storage.add_prior_preferences(sqlite_db, [storage.PriorSpec(e.prompt_messages, e.chosen, e.rejected)
                                              for e in examples(60, 5, marker="banana")], source="old data")
    ws.config.reward.prior_weight = 0.0
    with pytest.raises(NotEnoughJudgmentsError):  # priors switched off: nothing to train on
        run_reward_training(ws, sqlite_db, stack, progress=False)
    ws.config.reward.prior_weight = 1.0
    version = run_reward_training(ws, sqlite_db, stack, progress=False)
    metrics = json.loads(version.metrics_json)
    assert metrics["prior_judgments"] == 60 and metrics["judgments"] == 0
    assert metrics["n_train"] + metrics["n_heldout"] == 60 and metrics["n_heldout"] > 0  # priors alone: own split
    trained = evaluate_reward_model(stack, heldout, FAST)[0]
    assert untrained < 0.8 and trained >= 0.9, (untrained, trained)  # no human judgment, yet ordered

    # Imported pairs' decisive judgments train only with reward.use_imported_pairs.
    pairs = [storage.PairSpec(e.prompt_messages, e.chosen, e.rejected, "ours", "theirs")
             for e in examples(6, 7, marker="banana")]
    storage.add_imported_pairs(sqlite_db, pairs, source="arena", judgments_wanted=1)
    user = storage.create_annotator(sqlite_db, "ann", "password123").id
    while (served := storage.next_pair_for(sqlite_db, user)) is not None:
        storage.record_judgment(sqlite_db, pair_id=served.pair_id, annotator_id=user, choice="a")
    ws.config.reward.prior_weight = 0.0
    ws.config.reward.use_imported_pairs = False
    with pytest.raises(NotEnoughJudgmentsError):
        run_reward_training(ws, sqlite_db, stack, progress=False)
    ws.config.reward.use_imported_pairs = True
    used = json.loads(run_reward_training(ws, sqlite_db, stack, progress=False).metrics_json)
    assert used["decisive"] == 6 and used["prior_judgments"] == 0
