"""Step labels: cutting a response into steps (by lines, numbered steps, a separator), the rules of a set of labels
(each step, or the first wrong one), serving responses for step labeling with a lease per annotator, storing the
labels once, and the configuration's checks; on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest

import storage
from rlhf_core.config import Config, ConfigError, validate
from rlhf_core.data.steps import StepLabelError, check_step_labels, labels_for_first_wrong, split_steps
from storage import (
    JudgmentError,
    StepTaskGone,
    add_prompts,
    create_annotator,
    list_prompts,
    next_step_task,
    record_generations,
    record_step_labels,
    served_step_task,
    set_active,
    skip_step_task,
    step_label_counts,
    step_label_rows,
)

CHAIN = "First, 3 + 4 = 7.\nThen 7 * 2 = 14.\n\nSo the answer is 14."


def test_responses_split_by_lines_numbers_and_separators() -> None:
    assert split_steps(CHAIN, "lines") == ["First, 3 + 4 = 7.", "Then 7 * 2 = 14.", "So the answer is 14."]
    numbered = "Let me see.\n1. add: 3 + 4 = 7\n   (carry nothing)\n2) double it: 14\nStep 3: answer 14"
    assert split_steps(numbered, "numbered") == [
        "Let me see.", "1. add: 3 + 4 = 7\n   (carry nothing)", "2) double it: 14", "Step 3: answer 14"]
    assert split_steps("no numbers here\nat all", "numbered") == ["no numbers here\nat all"]
    assert split_steps("1.5 is not a step number\n2. but this is", "numbered") == [
        "1.5 is not a step number", "2. but this is"]
    assert split_steps("a\nstill a\n\nb\n\n\n\nc", "separator", "\n\n") == ["a\nstill a", "b", "c"]
    assert split_steps("", "lines") == []
    # Past the cap, the rest joins the last step: no text is lost.
    assert split_steps("\n".join("abcdef"), "lines", max_steps=3) == ["a", "b", "c\nd\ne\nf"]
    with pytest.raises(ValueError, match="step_separator"):
        split_steps("a", "separator", "")


def test_labels_each_step_or_the_first_wrong_one() -> None:
    assert labels_for_first_wrong(4, 3) == ["good", "good", "bad", None]
    assert labels_for_first_wrong(2, None) == ["good", "good"]
    with pytest.raises(StepLabelError, match="step 5 does not exist"):
        labels_for_first_wrong(4, 5)
    assert check_step_labels(["good", "neutral", "bad", None], 4) == ["good", "neutral", "bad", None]
    assert check_step_labels(["bad", "", None], 3) == ["bad", None, None]  # after the first bad one: may be open
    with pytest.raises(StepLabelError, match="step 2 has no label"):
        check_step_labels(["good", None, "bad"], 3)
    with pytest.raises(StepLabelError, match="steps 1 and 3 have no label"):
        check_step_labels([None, "good", None], 3)
    with pytest.raises(StepLabelError, match="'great' is not a step label"):
        check_step_labels(["great"], 1)
    with pytest.raises(StepLabelError, match="2 labels for 3 steps"):
        check_step_labels(["good", "good"], 3)


def test_the_configuration_checks_step_settings() -> None:
    config = Config()
    config.labeling.mode = "steps"
    validate(config)
    config.labeling.mode = "triples"
    with pytest.raises(ConfigError, match="labeling.mode must be pairs or steps"):
        validate(config)
    config = Config()
    config.labeling.step_split = "separator"
    validate(config)  # a blank line by default
    config.labeling.step_separator = ""
    with pytest.raises(ConfigError, match="non-empty labeling.step_separator"):
        validate(config)
    config = Config()
    config.prm.aggregate = "mean"
    with pytest.raises(ConfigError, match="prm.aggregate must be min or product"):
        validate(config)


def _responses(db, texts: dict[str, list[str]], source: str = "arith.jsonl", version: int = 0) -> None:  # noqa: ANN001
    """Each prompt (by its text) with its sampled responses, imported under `source`."""
    add_prompts(db, [[{"role": "user", "content": p}] for p in texts], source=source)
    by_text = {storage.prompt_messages(p)[0]["content"]: p for p in list_prompts(db)}
    for prompt, responses in texts.items():
        record_generations(db, prompt_id=by_text[prompt].id, policy_version_id=version,
                           responses=[(t, 3) for t in responses], gen_params={}, pairs=[(0, 1)])


def test_serving_leases_each_response_to_one_annotator_at_a_time(db) -> None:  # noqa: ANN001
    _responses(db, {"2 + 2?": ["2 + 2 = 4", "2 + 2 = 5"]})
    _responses(db, {"chat": ["hello", "hi"]}, source="chat.jsonl")
    alice, bob, carol = (create_annotator(db, n, "password123") for n in ("alice", "bob", "carol"))
    sources = ["arith.jsonl"]
    first = next_step_task(db, alice.id, sources=sources)
    assert first is not None and first.text in ("2 + 2 = 4", "2 + 2 = 5")
    assert first.prompt_messages == [{"role": "user", "content": "2 + 2?"}]
    again = next_step_task(db, alice.id, sources=sources)  # a reload: the same serve
    assert again.sample_id == first.sample_id and again.served_at == first.served_at
    second = next_step_task(db, bob.id, sources=sources)  # alice's lease holds the only slot of hers
    assert second is not None and second.sample_id != first.sample_id
    assert next_step_task(db, carol.id, sources=sources) is None  # both responses held (wanted = 1)
    assert next_step_task(db, carol.id, sources=sources, wanted=2) is not None
    # The other prompt set is not in steps mode; with sources None every train prompt is.
    assert {next_step_task(db, carol.id, sources=None, wanted=3).text} <= {"hello", "hi", "2 + 2 = 4", "2 + 2 = 5"}


def test_labels_are_stored_once_with_their_steps_and_audit(db) -> None:  # noqa: ANN001
    _responses(db, {"sum": ["3 + 4 = 7\n7 * 2 = 15\nanswer 15", "x"]})
    alice = create_annotator(db, "alice", "password123")
    task = next_step_task(db, alice.id, sources=None)
    assert task.text.startswith("3 + 4")  # the older response first
    steps = split_steps(task.text, "lines")
    labels = check_step_labels(labels_for_first_wrong(len(steps), 2), len(steps))
    assert record_step_labels(db, alice.id, task.sample_id, steps=steps, labels=labels, first_wrong=2,
                              actor="alice", address="10.0.0.1")
    assert not record_step_labels(db, alice.id, task.sample_id, steps=steps, labels=labels)  # a double click
    (row,) = step_label_rows(db)
    assert (row.steps, row.labels, row.first_wrong, row.annotator) == (steps, labels, 2, "alice")
    assert row.prompt_messages == [{"role": "user", "content": "sum"}] and row.prompt_source == "arith.jsonl"
    events = [e for e in storage.audit_events(db) if e.action == "step_labels"]
    assert len(events) == 1 and events[0].actor == "alice" and events[0].params["sample"] == task.sample_id
    assert served_step_task(db, alice.id, task.sample_id).text == task.text
    nxt = next_step_task(db, alice.id, sources=None)
    assert nxt is not None and nxt.sample_id != task.sample_id  # a labeled response is not served again
    assert step_label_counts(db) == {"responses": 1, "labels": 1, "steps": len([x for x in labels if x]),
                                     "bad": labels.count("bad")}


def test_refusals_change_nothing(db) -> None:  # noqa: ANN001
    _responses(db, {"p": ["one", "two"]})
    alice, bob = create_annotator(db, "alice", "password123"), create_annotator(db, "bob", "password123")
    task = next_step_task(db, alice.id, sources=None)
    with pytest.raises(StepTaskGone, match="not yours to label"):  # never served to bob
        record_step_labels(db, bob.id, task.sample_id, steps=["one"], labels=["good"])
    with pytest.raises(StepTaskGone, match="was not shown to you"):
        served_step_task(db, bob.id, task.sample_id)
    skip_step_task(db, alice.id, task.sample_id)
    with pytest.raises(StepTaskGone):  # skipped: its labels are not taken any more
        record_step_labels(db, alice.id, task.sample_id, steps=["one"], labels=["good"])
    assert next_step_task(db, alice.id, sources=None).sample_id != task.sample_id
    assert next_step_task(db, bob.id, sources=None) is not None  # the skipped one's slot is free again
    set_active(db, "alice", False)
    with pytest.raises(JudgmentError, match="disabled"):
        next_step_task(db, alice.id, sources=None)
    assert step_label_rows(db) == []


def test_an_expired_lease_frees_the_slot(db) -> None:  # noqa: ANN001
    _responses(db, {"p": ["only", "other"]})
    alice, bob = create_annotator(db, "alice", "password123"), create_annotator(db, "bob", "password123")
    held = next_step_task(db, alice.id, sources=None, lease_seconds=-1).sample_id  # expired at once
    assert next_step_task(db, bob.id, sources=None).sample_id == held  # its slot is free: first in line again
    # alice's expired serve is served to her again rather than lost.
    assert next_step_task(db, alice.id, sources=None) is not None


def test_shown_tasks_sends_each_response_once_per_session_and_forgets_the_oldest() -> None:
    from labeling_app.steps import ShownTasks

    shown = ShownTasks(capacity=2)
    assert shown.claim("a", "7") and not shown.claim("a", "7")  # the late duplicate sends nothing
    assert shown.claim("a", "8") and shown.claim("a", "7")  # a different response is always sent
    assert shown.claim(None, "7") and shown.claim(None, "7")  # no session: no memory
    assert shown.claim("b", "7") and shown.claim("c", "7")  # "a" is the oldest of three: forgotten
    assert shown.claim("a", "7") and not shown.claim("c", "7")
