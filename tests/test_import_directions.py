"""Imports point inward: the packages never import the ones that build on them."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# package -> top-level packages it must never import (STYLE.md, section 1): the tools may
# import anything and nothing imports them; the simulator is a client of the services.
FORBIDDEN: dict[str, frozenset[str]] = {
    "schemas": frozenset({"services", "simulators", "tools"}),
    "services": frozenset({"simulators", "tools"}),
    "simulators": frozenset({"tools"}),
}


def imported_modules(source: str) -> Iterator[tuple[int, str]]:
    """Yield (line, module) for every import in ``source``, lazy ones inside functions too."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            yield from ((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.lineno, node.module


def offenders(package: str) -> list[str]:
    """Return ``file:line: module`` for each import of a package forbidden to ``package``."""
    found = []
    for path in sorted((REPO / package).rglob("*.py")):
        for line, module in imported_modules(path.read_text(encoding="utf-8")):
            if module.split(".")[0] in FORBIDDEN[package]:
                found.append(f"{path.relative_to(REPO)}:{line}: {module}")
    return found


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_imports_point_inward(package: str) -> None:
    """No module of the package imports, even lazily, a package that builds on it."""
    assert offenders(package) == []


def test_lazy_import_inside_a_function_is_found() -> None:
    """An import inside a function body counts as much as one at the top."""
    source = "def run():\n    from tools.bench import main\n    import simulators.fleet\n"
    assert list(imported_modules(source)) == [(2, "tools.bench"), (3, "simulators.fleet")]
