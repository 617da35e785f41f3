"""Reward functions: each kind against hand-made cases, TRL's own accuracy_reward through `function =
"module:function"`, a function's None, the configuration's list of tables and its one-line refusals."""

from __future__ import annotations

from pathlib import Path

import pytest

from rlhf_core.config import Config, ConfigError, RewardFunctionConfig, dump_config, load_config
from rlhf_core.rewards import build_reward_functions, missing_columns, score_with_functions
from rlhf_core.rewards.answers import answer_score, final_answer, parse_number


def scores(entry: RewardFunctionConfig, texts: list[str], columns: list[dict] | None = None) -> list[float | None]:
    functions = build_reward_functions([entry])
    prompts = [[{"role": "user", "content": "q"}]] * len(texts)
    result = score_with_functions(functions, prompts, texts, columns or [{}] * len(texts))
    return result.values[functions[0].name]


def test_format_regex():
    entry = RewardFunctionConfig(kind="format_regex", pattern=r"^<answer>\d+</answer>$")
    assert scores(entry, ["<answer>42</answer>", "the answer is 42", "<answer>4x</answer>"]) == [1.0, 0.0, 0.0]


def test_length_window_in_words_and_in_token_ids():
    entry = RewardFunctionConfig(kind="length_window", min_tokens=4, max_tokens=6)
    texts = ["one two three four five", "one", "one two three", " ".join(["w"] * 9), " ".join(["w"] * 12)]
    # 5 words inside; 1 word below min/2 = 2; 3 words halfway between 2 and 4; 9 words: (12 - 9) / 6; 12: 0
    assert scores(entry, texts) == [1.0, 0.0, 0.5, 0.5, 0.0]
    built = build_reward_functions([entry])
    by_ids = score_with_functions(built, [[]] * 2, ["a b", "a"], [{}, {}], completion_ids=[[1] * 5, [1] * 7])
    assert by_ids.values["length_window"] == [1.0, pytest.approx(5 / 6)]


def test_answer_match_numeric_string_and_missing_answer():
    numeric = RewardFunctionConfig(kind="answer_match", column="answer")
    texts = ["3 x 4 = 12", "I think it is 13.", "The answer is 1,234.", "\\boxed{0.75} is it", "no number"]
    golds = [{"answer": 12}, {"answer": "12"}, {"answer": "1234"}, {"answer": "3/4"}, {"answer": 5}]
    assert scores(numeric, texts, golds) == [1.0, 0.0, 1.0, 1.0, 0.0]
    string = RewardFunctionConfig(kind="answer_match", column="answer", compare="string")
    assert scores(string, ["Answer: **Paris**.", "paris is nice", "Lyon"], [{"answer": "Paris"}] * 3) \
        == [1.0, 0.0, 0.0]
    # a prompt without the column: the function does not apply
    assert scores(numeric, ["12", "12"], [{"answer": 12}, {}]) == [1.0, None]
    assert final_answer("steps\nso the answer is 7 apples") == "7 apples"
    assert parse_number("\u22122") == -2.0 and parse_number("1,234") == 1234.0 and parse_number("x") is None


def test_answer_match_math_through_math_verify():
    math = RewardFunctionConfig(kind="answer_match", column="answer", compare="math")
    texts = ["So $x = \\frac{1}{2}$.", "The result is $\\boxed{0.5}$", "It is \\boxed{\\frac{1}{3}}"]
    assert scores(math, texts, [{"answer": "$\\frac{1}{2}$"}] * 3) == [1.0, 1.0, 0.0]
    assert answer_score("anything", "", "math") is None


def test_json_valid_with_and_without_schema():
    plain = RewardFunctionConfig(kind="json_valid")
    texts = ['{"name": "Ada", "age": 36}', 'Here:\n```json\n{"name": "Ada"}\n```', "{name: Ada}"]
    assert scores(plain, texts) == [1.0, 1.0, 0.0]
    schema = {"type": "object", "required": ["name", "age"], "properties": {"age": {"type": "integer"}}}
    strict = RewardFunctionConfig(kind="json_valid", schema=schema)
    assert scores(strict, texts + ['{"name": "Ada", "age": "old"}']) == [1.0, 0.0, 0.0, 0.0]


def test_trl_accuracy_reward_unchanged_through_module_function():
    entry = RewardFunctionConfig(function="trl.rewards:accuracy_reward", weight=2.0)
    functions = build_reward_functions([entry])
    assert functions[0].name == "accuracy_reward" and functions[0].columns == ("solution",)
    texts = ["My answer is $\\boxed{\\frac{1}{3}}$", "My answer is $\\boxed{\\frac{1}{2}}$", "whatever"]
    columns = [{"solution": "$\\frac{1}{3}$"}, {"solution": "$\\frac{1}{3}$"}, {"solution": "not math ::"}]
    result = score_with_functions(functions, [[{"role": "user", "content": "q"}]] * 3, texts, columns)
    assert result.values["accuracy_reward"] == [1.0, 0.0, None]  # TRL's None: the gold does not parse
    assert result.total() == [2.0, 0.0, 0.0]
    assert "'solution'" in missing_columns(functions, {"answer"})
    assert missing_columns(functions, {"solution", "answer"}) is None


def test_a_function_without_the_signature_or_that_fails_is_named():
    from rlhf_core.config.reward_functions import check_reward_functions
    from rlhf_core.rewards import RewardFunction, RewardFunctionError

    entry = RewardFunctionConfig(function="os.path:join", name="broken")  # takes no `completions`: refused
    with pytest.raises(ConfigError, match=r'#1 \("broken", os.path:join\): .* does not take `completions`'):
        check_reward_functions([entry], "rlhf.toml")

    def crashes(completions, **_):
        raise KeyError("answer")

    failing = RewardFunction("crashes", 1.0, crashes, (), "[[reward.functions]] #3 (\"crashes\", mod:crashes)")
    with pytest.raises(RewardFunctionError, match=r"#3 .* failed: KeyError: 'answer'"):
        score_with_functions([failing], [[]], ["x"], [{}])
    short = RewardFunction("short", 1.0, lambda completions, **_: [1.0], (), "#1 (\"short\")")
    with pytest.raises(RewardFunctionError, match=r"returned list of length 1 for 2 responses"):
        score_with_functions([short], [[], []], ["x", "y"], [{}, {}])


def write_config(tmp_path: Path, functions: str, extra: str = "") -> Path:
    path = tmp_path / "rlhf.toml"
    path.write_text(f"{extra}\n[reward]\nepochs = 1\n{functions}", encoding="utf-8")
    return path


def test_list_of_tables_loads_and_dumps_back(tmp_path: Path):
    path = write_config(tmp_path, """
[[reward.functions]]
kind = "answer_match"
column = "answer"
weight = 2

[[reward.functions]]
kind = "json_valid"
name = "json"
[reward.functions.schema]
type = "object"

[[reward.functions]]
function = "trl.rewards:accuracy_reward"
""", "[loop]\nmode = \"verifiable\"")
    config = load_config(path)
    kinds = [(f.kind, f.function, f.weight) for f in config.reward.functions]
    assert kinds == [("answer_match", "", 2.0), ("json_valid", "", 1.0), ("", "trl.rewards:accuracy_reward", 1.0)]
    assert config.reward.functions[1].schema == {"type": "object"} and config.loop.mode == "verifiable"
    again = tmp_path / "again.toml"
    again.write_text(dump_config(config), encoding="utf-8")
    assert load_config(again).reward.functions == config.reward.functions


@pytest.mark.parametrize(("entry", "message"), [
    ('function = "no_such_module:score"', r'#1 \("score", no_such_module:score\): function .* cannot be loaded '
                                          r"\(ModuleNotFoundError"),
    ('function = "trl.rewards:no_such_function"', r"cannot be loaded \(AttributeError"),
    ('function = "trl.rewards"', r'must be "package.module:function"'),
    ('kind = "answer_match"', r'#1 \("answer_match", answer_match\): needs `column`'),
    ('kind = "python_tests"', r"needs `column`"),
    ('kind = "format_regex"\npattern = "(unclosed"', r"pattern '\(unclosed' does not compile"),
    ('kind = "json_valid"\nschema = { type = "no-such-type" }', r"the schema is not a valid JSON Schema"),
    ('kind = "length_window"\nmin_tokens = 9\nmax_tokens = 3', r"needs 0 <= min_tokens <= max_tokens"),
    ('kind = "format_regex"\npattern = "x"\ncolumn = "answer"', r"`column` is not a key of format_regex"),
    ('kind = "no_such_kind"', r"unknown kind \(known: format_regex, length_window"),
    ('kind = "json_valid"\nfunction = "trl.rewards:accuracy_reward"', r"set exactly one of `kind`"),
    ('kind = "json_valid"\nname = "reward_model"', r"the name 'reward_model' is the learned reward model's"),
    ('kind = "json_valid"\nfavourite = 3', r"unknown key 'favourite'"),
])
def test_bad_entries_are_refused_with_one_line_naming_them(tmp_path: Path, entry: str, message: str):
    path = write_config(tmp_path, f"[[reward.functions]]\n{entry}\n")
    with pytest.raises(ConfigError, match=message) as caught:
        load_config(path)
    assert "\n" not in str(caught.value) and str(path) in str(caught.value)


def test_duplicate_names_and_verifiable_mode_rules(tmp_path: Path):
    twice = '[[reward.functions]]\nkind = "json_valid"\n[[reward.functions]]\nkind = "json_valid"\n'
    with pytest.raises(ConfigError, match=r"#2 .*the name is taken by entry #1"):
        load_config(write_config(tmp_path, twice))
    with pytest.raises(ConfigError, match=r"loop.mode = \"verifiable\" scores with reward functions alone"):
        load_config(write_config(tmp_path, "", "[loop]\nmode = \"verifiable\""))
    one = '[[reward.functions]]\nkind = "json_valid"\n'
    with pytest.raises(ConfigError, match=r"set policy.algo to ppo or grpo \(not dpo\)"):
        load_config(write_config(tmp_path, one, "[loop]\nmode = \"verifiable\"\n[policy]\nalgo = \"dpo\""))
    assert Config().reward.functions == [] and Config().loop.mode == "standard"


def polite_kind(entry: RewardFunctionConfig):  # noqa: ANN201 - a plugin's kind, built from its entry
    return lambda prompts, completions, **_: [float("please" in c[0]["content"]) for c in completions]


def test_a_plugins_kind_is_one_table_entry(tmp_path: Path):
    """A kind registered from outside (a plugin) is accepted by the configuration and scores: the table is the only
    list of kinds."""
    from rlhf_core.registry import REWARD_FUNCTION_KINDS, RewardFunctionKind

    path = write_config(tmp_path, '[[reward.functions]]\nkind = "polite"\n')
    with pytest.raises(ConfigError, match="unknown kind"):
        load_config(path)
    with REWARD_FUNCTION_KINDS.registered(RewardFunctionKind("polite", "says please",
                                                             "test_reward_functions:polite_kind")):
        entry = load_config(path).reward.functions[0]
        assert scores(entry, ["please sit", "sit"]) == [1.0, 0.0]
    assert "polite" not in REWARD_FUNCTION_KINDS
