"""The one-way imports of SPEC §1, checked on the source: a plane never imports another plane."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
OURS = ("contracts", "planes", "plugins", "research", "cli")
PLANES = sorted(p.name for p in (ROOT / "planes").iterdir() if (p / "__init__.py").is_file())
RUNTIME_ONLY = ("planes.runtime",)  # the composition root: no plane may reach for it


def imports(path: Path) -> Iterator[tuple[int, str]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.lineno, node.module


def our_imports(folder: str) -> Iterator[tuple[str, int, str]]:
    for path in sorted((ROOT / folder).rglob("*.py")):
        for line, module in imports(path):
            if module.split(".")[0] in OURS:
                yield f"{path.relative_to(ROOT)}:{line}", module, module.split(".")[0]


def test_there_are_planes_to_check() -> None:
    assert {"control", "market", "risk", "observability"} <= set(PLANES)


def test_contracts_import_nothing_of_ours() -> None:
    bad = [(where, m) for where, m, top in our_imports("contracts") if top != "contracts"]
    assert bad == []


@pytest.mark.parametrize("folder", ["plugins", "research"])
def test_plugins_and_research_import_only_contracts(folder: str) -> None:
    bad = [(where, m) for where, m, top in our_imports(folder) if top not in ("contracts", folder)]
    assert bad == []


@pytest.mark.parametrize("plane", PLANES)
def test_a_plane_never_imports_another_plane_or_the_runtime(plane: str) -> None:
    bad = []
    for where, module, top in our_imports(f"planes/{plane}"):
        parts = module.split(".")
        other_plane = (
            top == "planes" and len(parts) > 1 and parts[1] in PLANES and parts[1] != plane
        )
        if other_plane or module in RUNTIME_ONLY or top in ("cli", "research"):
            bad.append((where, module))
        if top == "plugins" and module != "plugins.hookspecs":
            bad.append((where, module))
    assert bad == []
