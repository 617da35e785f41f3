"""The architecture as a test: which package may import which, no import cycles, rooms that say what they hold,
small files.

Walks the AST of every product module (imports inside functions count too: a lazy import is still
a dependency) and checks the rules README.md's "Architecture" section states.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PRODUCT = ("rlhf_core", "storage", "labeling_app")
MAX_LINES = 400

# Who may import whom inside rlhf_core (besides itself and the packages outside the project).
# "config" and "workspace" are the two top-level modules every layer may read.
_BASE = {"algorithms", "config", "registry", "workspace", "storage"}
RLHF_CORE_LAYERS: dict[str, set[str]] = {
    "algorithms": set(),
    "registry": set(),
    "config": {"registry"},
    "models": {"algorithms", "config", "registry"},
    "workspace": {"config", "registry", "storage"},
    # Reward functions read their entries and the table of kinds; every layer that scores responses reads them.
    "rewards": {"config", "registry"},
    "data": _BASE,
    "training": _BASE | {"models", "data", "rewards"},
    # AI judges: prompts, the judge kinds, runs, routing, figures; no training code, no loop.
    "judges": _BASE | {"models", "data"},
    "loop": _BASE | {"models", "data", "training", "rewards", "judges"},
    "simulator": _BASE | {"models", "data", "training", "loop", "rewards", "judges"},
    "service": _BASE | {"models", "data", "training", "loop", "rewards", "judges"},
    "model_export": _BASE | {"models", "data", "training", "loop", "service"},
    "ops": _BASE | {"training"},
    "cli": _BASE | {"models", "data", "training", "loop", "simulator", "service", "model_export", "labeling_app",
                    "rewards", "judges", "ops"},
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def product_modules() -> dict[str, Path]:
    modules = {}
    for package in PRODUCT:
        for path in sorted((ROOT / package).rglob("*.py")):
            if "migrations" in path.parts:  # alembic scripts, loaded by path, not imported
                continue
            modules[module_name(path)] = path
    return modules


def imported_modules(path: Path, name: str, known: set[str]) -> set[str]:
    """Project modules `path` imports, resolved to the most specific known module."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            candidates = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            # `from pkg import mod` imports the module pkg.mod when there is one.
            candidates = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base
                          for alias in node.names]
        else:
            continue
        for candidate in candidates:
            while candidate and candidate not in known:
                candidate = candidate.rpartition(".")[0]
            if candidate and candidate != name:
                targets.add(candidate)
    return targets


def import_graph() -> dict[str, set[str]]:
    modules = product_modules()
    known = set(modules)
    return {name: imported_modules(path, name, known) for name, path in modules.items()}


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    counter = [0]

    def visit(node: str) -> None:
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return cycles


def layer_of(module: str) -> str:
    """"storage", "labeling_app", or the rlhf_core room ("algorithms", "cli", "config", ...)."""
    parts = module.split(".")
    if parts[0] != "rlhf_core":
        return parts[0]
    return parts[1] if len(parts) > 1 else "rlhf_core"


def test_find_cycles_sees_a_cycle_and_a_clean_chain():
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": set()}) == []


def test_no_import_cycles():
    cycles = find_cycles(import_graph())
    assert not cycles, "import cycles: " + "; ".join(" <-> ".join(c) for c in cycles)


def test_import_arrows_point_one_way():
    bad = []
    for module, targets in import_graph().items():
        source = layer_of(module)
        for target in targets:
            dest = layer_of(target)
            if source == dest or target == "rlhf_core":
                continue
            if source == "storage":
                bad.append(f"{module} -> {target} (storage imports no other project package)")
            elif source == "labeling_app" and dest == "cli":
                bad.append(f"{module} -> {target} (the app does not import the CLI)")
            elif source in RLHF_CORE_LAYERS and dest not in RLHF_CORE_LAYERS[source]:
                bad.append(f"{module} -> {target} ({source} may import only: "
                           f"{', '.join(sorted(RLHF_CORE_LAYERS[source])) or 'nothing of the project'})")
            elif source == "rlhf_core" and module != "rlhf_core.__main__":
                bad.append(f"{module} -> {target} (rlhf_core/__init__ imports nothing)")
    assert not bad, "\n".join(sorted(bad))


def test_the_checker_catches_a_forbidden_arrow(tmp_path):
    """The rule above fails on an algorithms module that reaches into models (checked on a copy)."""
    path = ROOT / "rlhf_core" / "algorithms" / "masked.py"
    known = set(product_modules())
    copy = tmp_path / "masked.py"
    copy.write_text(path.read_text(encoding="utf-8") + "\nfrom rlhf_core.models.stack import ModelStack\n")
    targets = imported_modules(copy, "rlhf_core.algorithms.masked", known)
    assert "rlhf_core.models.stack" in targets
    assert layer_of("rlhf_core.models.stack") not in RLHF_CORE_LAYERS["algorithms"]


def test_rooms_say_what_they_hold():
    """Folders follow concerns, not a count (STYLE.md 13): each holds at least two modules (a one-file folder is a
    file), and its __init__ docstring names every module in it, so the room's paragraph is its index."""
    folders: dict[Path, list[str]] = defaultdict(list)
    for path in product_modules().values():
        if path.name != "__init__.py":
            folders[path.parent].append(path.stem)
    lonely, unnamed, no_doc = [], [], []
    for folder, modules in folders.items():
        if folder.name in PRODUCT:
            continue  # a top-level package is the design card's, whatever it holds
        if len(modules) < 2:
            lonely.append(f"{folder.relative_to(ROOT)}: {modules}")
        init = folder / "__init__.py"
        doc = ast.get_docstring(ast.parse(init.read_text(encoding="utf-8"))) if init.exists() else None
        if not doc or len(doc.split()) < 12:
            no_doc.append(str(folder.relative_to(ROOT)))
            continue
        missing = [m for m in modules if f"`{m}`" not in doc and f"`{m}." not in doc and f".{m}`" not in doc]
        if missing:
            unnamed.append(f"{folder.relative_to(ROOT)}: {missing}")
    assert not lonely, f"folders of one module: {lonely}"
    assert not no_doc, f"folders without a paragraph in __init__.py: {no_doc}"
    assert not unnamed, f"modules their folder's paragraph does not name: {unnamed}"


def test_no_product_file_is_too_long():
    long = [f"{p.relative_to(ROOT)}: {n}" for p in product_modules().values()
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES]
    assert not long, long


@pytest.mark.parametrize("module", ["rlhf_core", "rlhf_core.algorithms", "rlhf_core.cli"])
def test_packages_import_on_their_own(module):
    """Each imports in a fresh interpreter (an order-dependent cycle would fail here)."""
    subprocess.run([sys.executable, "-c", f"import {module}"], check=True, cwd=ROOT, timeout=120)


def test_pure_math_loads_without_the_model_stack():
    code = ("import sys, rlhf_core.algorithms; "
            "bad = [m for m in sys.modules if m.startswith(('transformers', 'peft', 'storage', 'sqlmodel'))]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, timeout=120)
