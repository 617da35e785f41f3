"""The docs site: the generated reference pages match the code (else: run python scripts/gen_docs.py), every
configuration key and command has its entry, the hand-written status page names exactly the keys a real
workspace's `rlhf status --json` prints, every page is in the site's navigation, and the README's loading
snippets are the docs page's."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import import_kind

import storage
from rlhf_core.config import Config, declared_settings

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"


def gen_docs() -> Any:
    """scripts/gen_docs.py as a module (scripts/ is no package)."""
    spec = importlib.util.spec_from_file_location("gen_docs", ROOT / "scripts" / "gen_docs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def generated() -> dict[Path, str]:
    return gen_docs().pages()


def test_generated_reference_pages_are_current(generated: dict[Path, str]) -> None:
    stale = [str(path) for path, text in generated.items()
             if not (ROOT / path).is_file() or (ROOT / path).read_text(encoding="utf-8") != text]
    assert not stale, f"{', '.join(stale)} out of date with the code: run python scripts/gen_docs.py"


def sections_of(page: str) -> dict[str, str]:
    """Heading text -> the Markdown under it, for each `## ` heading."""
    parts = re.split(r"^## (.+)$", page, flags=re.M)
    return dict(zip(parts[1::2], parts[2::2]))


def test_every_configuration_key_has_its_row_in_its_section(generated: dict[Path, str]) -> None:
    sections = sections_of(generated[Path("docs/reference/configuration.md")])
    settings = list(declared_settings(Config))
    assert len(settings) > 100
    missing = [s.key for s in settings
               if f"| `{s.name}` |" not in sections.get(f"[{s.section}]" if s.section else "Top level", "")]
    assert not missing, f"keys without a row: {missing}"
    algo = next(line for line in sections["[policy]"].splitlines() if line.startswith("| `algo` |"))
    assert "`ppo`, `grpo`, `dpo`" in algo  # a registry's choices, read when the page is made
    rows = re.findall(r"^\| `(\w+)` \| (\w+(?:\[\w+\])?) \| `([^`]*)` \|", generated[Path(
        "docs/reference/configuration.md")], flags=re.M)
    assert ("quantize_4bit", "str", '"auto"') in rows and ("feature_depths", "list[float]", "[0.0, 0.5, 1.0]") in rows


def test_every_command_has_its_entry(generated: dict[Path, str]) -> None:
    import typer

    from rlhf_core.cli.main import load_commands

    root = typer.main.get_command(load_commands())
    paths = [f"rlhf {name}" for name, c in root.commands.items() if not getattr(c, "commands", None)]
    paths += [f"rlhf {name} {sub}" for name, c in root.commands.items() for sub in getattr(c, "commands", {})]
    headings = set(sections_of(generated[Path("docs/reference/cli.md")]))
    assert {"rlhf export", "rlhf prompts import", "rlhf user set-role"} <= set(paths)
    assert not [p for p in paths if p not in headings]
    export = sections_of(generated[Path("docs/reference/cli.md")])["rlhf export"]
    assert "| `--format <str>` | `hf` | hf, jsonl or parquet" in export and "| `--out <path>` | required |" in export


def test_a_stale_page_is_named_with_the_fix(tmp_path: Path) -> None:
    module = gen_docs()
    for path, text in module.pages().items():
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text(text, encoding="utf-8")
    assert module.stale_pages(tmp_path) == []
    page = tmp_path / module.CONFIGURATION_PAGE
    page.write_text(page.read_text().replace("| `ensemble` |", "| `ensembles` |"))
    assert module.stale_pages(tmp_path) == [module.CONFIGURATION_PAGE]


# -- the status page -------------------------------------------------------------------------------

NAMED = {"judgments_per_annotator": "<name>", "annotator_quality": "<name>", "imported_pairs": "<source>",
         "prior_preferences": "<source>", "overoptimization.alarms": "<version>",
         "judges": "<judge>"}  # maps keyed by names, not keys


def key_paths(value: Any, path: str = "") -> list[str]:
    """Every leaf key of a status JSON as the status page writes it (`a.b`, `a.<name>.c`, `a[].b`)."""
    if isinstance(value, dict):
        return [p for key, item in value.items()
                for p in key_paths(item, f"{path}.{NAMED.get(path, key)}" if path else key)]
    if isinstance(value, list) and value and all(isinstance(item, dict) for item in value):
        return [p for item in value for p in key_paths(item, f"{path}[]")]
    return [path]


def rlhf(*args: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "rlhf_core", *args], capture_output=True, text=True, env=env,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def test_status_page_names_every_key_a_real_status_prints(tmp_path: Path) -> None:
    """A workspace with a judged imported pair of two systems, prior judgments and a running job, so that every
    list and map of the status has an item: the page documents exactly the keys printed."""
    from rlhf_core.workspace import open_workspace

    ws_dir = tmp_path / "proj"
    rlhf("init", "-w", str(ws_dir))
    db = open_workspace(ws_dir).database()
    try:
        pairs = [{"prompt": f"question {i}", "response_a": f"alpha says {i}", "response_b": f"beta says {i}",
                  "system_a": "alpha", "system_b": "beta"} for i in range(3)]
        import_kind(db, "pairs", jsonl(tmp_path / "arena.jsonl", pairs), source="arena")
        import_kind(db, "preferences", jsonl(tmp_path / "prior.jsonl", [{"prompt": "2 + 2?", "chosen": "4",
                                                                          "rejected": "5"}]), source="hh")
        alice = storage.create_annotator(db, "alice", "password123")
        while (served := storage.next_pair_for(db, alice.id)) is not None:
            storage.record_judgment(db, pair_id=served.pair_id, annotator_id=alice.id, choice="a")
        storage.add_policy_version(db, parent_id=0, adapter_path="/nowhere", algorithm="grpo", round=1,
                                   metrics={"overoptimization": "v1: the proxy gain rose while ..."})
        storage.create_judge(db, "gpt", "openai", {"base_url": "http://127.0.0.1:9/v1", "model": "m"})
        storage.enqueue_job(db, "round", {})
        storage.claim_next_job(db, "docs-test")
    finally:
        db.dispose()
    status = json.loads(rlhf("status", "--json", "-w", str(ws_dir)))
    assert status["leaderboard"]["systems"] and status["jobs"]["running"] and status["imported_pairs"]
    assert status["overoptimization"]["alarm"] and status["judges"]

    printed = set(key_paths(status))
    page = (DOCS / "reference" / "status.md").read_text(encoding="utf-8")
    documented = set(re.findall(r"^\| `([^`]+)` \|", page, flags=re.M))
    assert printed - documented == set(), "keys `rlhf status --json` prints that docs/reference/status.md lacks"
    assert documented - printed == set(), "keys docs/reference/status.md names that `rlhf status --json` lacks"
    assert {"counts.pairs_open", "versions.reward_model", "jobs.queued"} <= documented  # DESIGN.md's stable keys


# -- the site --------------------------------------------------------------------------------------


def test_every_page_is_in_the_navigation_and_every_entry_exists() -> None:
    nav = re.findall(r":\s*(\S+\.md)\s*$", (ROOT / "mkdocs.yml").read_text(encoding="utf-8"), flags=re.M)
    pages = sorted(str(p.relative_to(DOCS)) for p in DOCS.rglob("*.md"))
    assert sorted(nav) == pages


def python_blocks(text: str) -> list[str]:
    return [block.split("\n```", 1)[0] for block in text.split("```python\n")[1:]]


def test_the_readmes_loading_snippets_are_the_docs_pages() -> None:
    """tests/test_model_export.py runs the README's snippets; the docs page shows the same ones."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8").split("## Use the trained model", 1)[1]
    readme = readme.split("\n## ", 1)[0]
    page = (DOCS / "guide" / "trained-model.md").read_text(encoding="utf-8")
    assert len(python_blocks(readme)) == 3 and python_blocks(page) == python_blocks(readme)
