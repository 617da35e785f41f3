"""The architecture as a test: which package may import which, no import cycles, small files.

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
MAX_MODULES_PER_FOLDER = 12
MAX_LINES = 400

# Who may import whom inside rlhf_core (besides itself and the packages outside the project).
# "config" and "workspace" are the two top-level modules every layer may read.
RLHF_CORE_LAYERS: dict[str, set[str]] = {
    "algorithms": set(),
    "config": set(),
    "models": {"algorithms", "config"},
    "workspace": {"config", "storage"},
    "data": {"algorithms", "config", "workspace", "storage"},
    "training": {"algorithms", "models", "config", "workspace", "data", "storage"},
    "loop": {"algorithms", "models", "training", "data", "config", "workspace", "storage"},
    "model_export": {"algorithms", "models", "training", "loop", "data", "config", "workspace", "storage"},
    "cli": {"algorithms", "models", "training", "loop", "data", "config", "workspace", "storage", "labeling_app",
            "model_export"},
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


def test_rooms_stay_small_and_say_what_they_hold():
    too_many, no_doc = [], []
    folders: dict[Path, int] = defaultdict(int)
    for path in product_modules().values():
        folders[path.parent] += 1
    for folder, n in folders.items():
        if n > MAX_MODULES_PER_FOLDER + 1:  # + __init__.py
            too_many.append(f"{folder.relative_to(ROOT)}: {n} modules")
        init = folder / "__init__.py"
        doc = ast.get_docstring(ast.parse(init.read_text(encoding="utf-8"))) if init.exists() else None
        if not doc or len(doc.split()) < 12:
            no_doc.append(str(folder.relative_to(ROOT)))
    assert not too_many, too_many
    assert not no_doc, f"folders without a paragraph in __init__.py: {no_doc}"


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
