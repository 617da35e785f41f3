"""The operator tab's quality and selection sections in a real browser (no model needed): an operator
imports control pairs through the import box (a malformed file is refused with its line and nothing
is written), sees each annotator's control accuracy and majority agreement with intervals and whether
training uses their judgments, the pairs of each round by selection method, and the reward model's
held-out accuracy per round."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from browser_utils import PASSWORD, choose_file, clear_file, free_port, login, open_console
from sqlmodel import select

import storage
from labeling_app import ServedApp, serve
from rlhf_core.workspace import Workspace, init_workspace

pytestmark = [
    pytest.mark.browser,
    # Gradio's queue builds Dataframe payloads with pandas options pandas 3 deprecates; not ours to fix.
    pytest.mark.filterwarnings("ignore:.*no_silent_downcasting", "ignore:The copy keyword is deprecated"),
]

playwright_api = pytest.importorskip("playwright.sync_api")

GOOD = "\n".join([
    '{"prompt": "What is 2 + 2?", "response_a": "4", "response_b": "22", "expected": "a"}',
    '{"prompt": "Greet me", "response_a": "Go away.", "response_b": "Hello!", "expected": "b"}',
    '{"prompt": "Name a colour", "response_a": "Blue.", "response_b": "Red.", "expected": "tie"}',
]) + "\n"
GATE = "reward model v2: held-out accuracy 20/52 = 38%, 95% lower bound 26%, not above 50% (loop.min_reward_confidence)"
BAD = GOOD.splitlines()[0] + '\n{"prompt": "p", "response_a": "x", "response_b": "y", "expected": "maybe"}\n'


@dataclass
class QualityApp:
    ws: Workspace
    db: storage.Database
    served: ServedApp

    @property
    def url(self) -> str:
        return self.served.url


@pytest.fixture(scope="module")
def quality_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[QualityApp]:
    ws, _ = init_workspace(tmp_path_factory.mktemp("quality") / "ws")
    ws.config.reward.min_annotator_accuracy = 0.7
    db = ws.database()
    storage.create_annotator(db, "olga", PASSWORD, role="operator")
    storage.create_annotator(db, "ann", PASSWORD)
    storage.add_prompts(db, [[{"role": "user", "content": f"prompt {i}"}] for i in range(2)])
    first, second = storage.list_prompts(db, split="train")
    storage.record_generations(db, prompt_id=first.id, policy_version_id=0, round=1, selection="random",
                               responses=[("r0", 1), ("r1", 1), ("r2", 1)], gen_params={}, pairs=[(0, 1), (1, 2)])
    storage.record_generations(db, prompt_id=second.id, policy_version_id=0, round=1, selection="uncertainty",
                               responses=[("s0", 1), ("s1", 1), ("s2", 1)], gen_params={}, pairs=[(0, 1), (0, 2)],
                               info_scores=[0.25, 0.75])
    rm = storage.add_reward_model_version(db, adapter_path="/nowhere", trained_on=40, heldout_accuracy=0.74,
                                          heldout_loss=0.6, metrics={})
    storage.add_policy_version(db, parent_id=0, adapter_path="/nowhere", algorithm="grpo", round=1,
                               metrics={"rm_version": rm.id})
    served = serve(ws, db, None, port=free_port(), block=False, quiet=True)
    try:
        yield QualityApp(ws=ws, db=db, served=served)
    finally:
        served.close()
        db.dispose()


def _table_rows(page, elem_id: str) -> list[list[str]]:  # noqa: ANN001
    rows = page.locator(f"#{elem_id} [role=row]").all()
    cells = [[c.strip() for c in row.locator("[role=gridcell]").all_inner_texts()] for row in rows]
    return [row for row in cells if row]


def _wait_for_cell(page, elem_id: str, text: str) -> None:  # noqa: ANN001
    page.locator(f"#{elem_id} [role=gridcell]").filter(has_text=text).first.wait_for()


def _upload_and_import(page, path: Path, expect: str) -> str:  # noqa: ANN001
    """Choose `path` in the import box, wait for the upload, click Import, wait for a result holding
    `expect`, and return the result's text."""
    choose_file(page, "controls-file", path)
    page.click("#btn-import-controls")
    page.locator("#controls-result").get_by_text(expect).wait_for()
    return page.locator("#controls-result").inner_text().strip()


def test_operator_imports_controls_and_reads_quality_selection_and_rm_accuracy(
        quality_app: QualityApp, page, tmp_path: Path) -> None:  # noqa: ANN001
    db = quality_app.db
    login(page, quality_app.url, "olga")
    open_console(page)
    page.locator("#annotator-quality-note").get_by_text("No annotator has a quality figure yet").wait_for()

    # The reward model's held-out accuracy of round 1, and the pairs by selection method.
    _wait_for_cell(page, "rounds", "v1")
    newest = _table_rows(page, "rounds")[0]
    assert (newest[0], newest[3]) == ("v1", "74%")  # the "RM acc." column
    _wait_for_cell(page, "pair-selection", "uncertainty")
    assert _table_rows(page, "pair-selection") == [["1", "training", "random", "2", "2", "0", "—"],
                                                   ["1", "training", "uncertainty", "2", "2", "0", "0.5"]]

    page.locator("#controls").get_by_text("Import control pairs").first.click()
    # The import box is shown once the accordion has opened.
    page.locator("#btn-import-controls").wait_for()
    bad = tmp_path / "bad.jsonl"
    bad.write_text(BAD, encoding="utf-8")
    refused = _upload_and_import(page, bad, "bad.jsonl:2")
    assert "Not imported: bad.jsonl:2: expected must be one of a, b, tie, both_bad, not 'maybe'" in refused
    assert str(tmp_path) not in refused and "gradio" not in refused  # the upload's temp folder is not shown
    assert storage.count_control_pairs(db) == 0

    clear_file(page, "controls-file", "bad.jsonl")
    good = tmp_path / "controls.jsonl"
    good.write_text(GOOD, encoding="utf-8")
    imported = _upload_and_import(page, good, "from controls.jsonl")
    assert "Imported 3 control pairs from controls.jsonl (0 already there); 3 in all" in imported
    controls = storage.count_control_pairs(db)
    assert controls == 3

    # ann judges the three controls: two right (a, b), one wrong (a where tie was expected).
    ann = storage.get_annotator(db, "ann").id
    with db.session() as s:
        expected = dict(s.exec(select(storage.ControlPair.pair_id, storage.ControlPair.expected)).all())
    for pair_id, answer in expected.items():
        storage.record_judgment(db, pair_id=pair_id, annotator_id=ann, choice="a" if answer == "tie" else answer,
                                require_served=False)
    page.click("#btn-refresh")
    _wait_for_cell(page, "annotator-quality", "ann")
    # 2 of 3: Wilson 95% interval (21%, 94%); below the workspace's minimum of 70%, so training leaves ann out.
    assert _table_rows(page, "annotator-quality") == [["ann", "3", "67% (21%–94%)", "0", "—", "—", "—",
                                                       "left out (below 70%)"]]
    assert "3 control pairs imported" in page.locator("#annotator-quality-note").inner_text()

    # A reward model trained with reward.annotator_model = "crowd_bt" stores each annotator's η and left bias:
    # the table shows them beside control accuracy and agreement, with the weight training gave them.
    rm = storage.add_reward_model_version(db, adapter_path="/nowhere", trained_on=60, heldout_accuracy=0.7,
                                          heldout_loss=0.6, metrics={"annotators": {
                                              "ann": {"eta": 0.62, "left_bias": 0.31, "follows_preference": 0.58,
                                                      "judgments": 12, "control_judgments": 3,
                                                      "training_weight": 0.3},
                                              "sim-left-1": {"eta": 0.88, "left_bias": 0.93, "follows_preference": 0.53,
                                                             "judgments": 40, "control_judgments": 0,
                                                             "training_weight": 0.04}},
                                              # The round on it kept the policy (loop.min_reward_confidence).
                                              "policy_gate": {"open": False, "lower_bound": 0.26, "reason": GATE}})
    page.click("#btn-refresh")
    _wait_for_cell(page, "annotator-quality", "sim-left-1")
    assert _table_rows(page, "annotator-quality") == [
        ["ann", "3", "67% (21%–94%)", "0", "—", "0.62", "31%", "left out (below 70%)"],
        ["sim-left-1", "0", "—", "0", "—", "0.88", "93%", "weight 0.04"]]
    note = page.locator("#annotator-quality-note").inner_text()
    assert f"CrowdBT, v{rm.id}" in note and "left bias: how often they pick the side shown on the left" in note
    # The rounds section says the last round did not update the policy, and why.
    page.locator("#rounds-note").get_by_text("The last round did not update the policy").wait_for()
    assert GATE in page.locator("#rounds-note").inner_text()
