"""The base-feature cache on a tiny model: it gives the features a direct read gives, reads only the responses it
has not seen (counted by forward passes), survives on disk per layout, sets an unreadable file aside, and the
policy gate's cross-fitted probe gets the same figure through it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from rlhf_core.config import RewardConfig
from rlhf_core.models.stack import ModelStack
from rlhf_core.training.crossfit import crossfit_accuracy
from rlhf_core.training.feature_cache import BaseFeatureCache, layout_key
from rlhf_core.training.reward_data import PreferenceExample, encode_pairs
from rlhf_core.training.reward_model import pair_features


@pytest.fixture
def stack(tiny_model_dir: Path) -> ModelStack:
    return ModelStack.load(tiny_model_dir, device=torch.device("cpu"))


def judgments(n: int, start: int = 0) -> list[PreferenceExample]:
    words = "apple river garden music window yellow quiet simple".split()
    return [PreferenceExample([{"role": "user", "content": f"q{i % 5}"}], " ".join(words[i % 8:]) + " banana",
                              " ".join(words[: 1 + i % 7]), None, i % 5, annotator="ann")
            for i in range(start, start + n)]


class Forwards:
    """Counts the forward passes of the decoder (the base model under its adapters)."""

    def __init__(self, stack: ModelStack) -> None:
        self.n = 0
        stack._decoder().register_forward_hook(lambda *_: setattr(self, "n", self.n + 1))


def test_the_cache_reads_only_new_responses_and_gives_the_direct_features(stack: ModelStack, tmp_path: Path) -> None:
    stack.set_reward_head(1, "mean", (0.5, 1.0))
    first, more = encode_pairs(stack.tokenizer, judgments(6), 64), encode_pairs(stack.tokenizer, judgments(4, 6), 64)
    cache = BaseFeatureCache.in_folder(tmp_path, stack)
    assert cache.path.name == f"base-features-{layout_key(stack)}.pt"
    chosen, rejected = cache.pair_features(stack, first, 4)
    distinct = {(tuple(p.prompt), tuple(r)) for p in first for r in (p.chosen, p.rejected)}
    assert (cache.hits, cache.misses) == (0, len(distinct)) and cache.path.is_file()
    direct = pair_features(stack, first, 4)
    torch.testing.assert_close(chosen, direct[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(rejected, direct[1], atol=1e-5, rtol=1e-5)

    again = BaseFeatureCache.in_folder(tmp_path, stack)  # from the file
    forwards = Forwards(stack)
    torch.testing.assert_close(again.pair_features(stack, first, 4)[0], chosen)
    assert forwards.n == 0 and again.misses == 0 and again.hits == len(distinct)
    both = first + more
    new = {(tuple(p.prompt), tuple(r)) for p in more for r in (p.chosen, p.rejected)} - distinct
    c_all, r_all = again.pair_features(stack, both, 4)
    assert forwards.n > 0 and again.misses == len(new)
    direct = pair_features(stack, both, 4)
    torch.testing.assert_close(c_all, direct[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(r_all, direct[1], atol=1e-5, rtol=1e-5)


def test_another_layout_gets_its_own_file_and_an_unreadable_one_is_rebuilt(stack: ModelStack, tmp_path: Path) -> None:
    pairs = encode_pairs(stack.tokenizer, judgments(3), 64)
    stack.set_reward_head(1, "last")
    last = BaseFeatureCache.in_folder(tmp_path, stack)
    last.pair_features(stack, pairs, 4)
    stack.set_reward_head(1, "mean")
    mean = BaseFeatureCache.in_folder(tmp_path, stack)
    assert mean.path != last.path and mean.entries == {}

    last.path.write_bytes(b"not a torch file")
    stack.set_reward_head(1, "last")
    rebuilt = BaseFeatureCache.in_folder(tmp_path, stack)
    assert rebuilt.entries == {} and last.path.with_suffix(".unreadable").is_file()
    rebuilt.pair_features(stack, pairs, 4)
    assert len(BaseFeatureCache.in_folder(tmp_path, stack).entries) == len(rebuilt.entries) > 0


def test_the_gate_probe_gets_the_same_figure_through_the_cache(stack: ModelStack, tmp_path: Path) -> None:
    cfg = RewardConfig(max_length=64, batch_size=4, pooling="mean", feature_depths=[0.5, 1.0])
    examples = judgments(20)
    direct = crossfit_accuracy(stack, examples, cfg)
    assert direct.n == 20
    assert crossfit_accuracy(stack, examples, cfg, tmp_path) == direct  # filling the cache
    forwards = Forwards(stack)
    assert crossfit_accuracy(stack, examples, cfg, tmp_path) == direct and forwards.n == 0  # read from it


def test_weights_replaced_in_place_get_a_new_file(tiny_model_dir: Path, tmp_path: Path) -> None:
    import shutil

    folder = Path(shutil.copytree(tiny_model_dir, tmp_path / "model"))
    stack = ModelStack.load(folder, device=torch.device("cpu"))
    before = layout_key(stack)
    assert layout_key(stack) == before
    (weights,) = folder.glob("*.safetensors")
    weights.write_bytes(weights.read_bytes() + b"\0")  # another size: as if new weights were saved there
    assert layout_key(stack) != before
