"""The pure core imports no I/O library."""

from __future__ import annotations

import ast
from pathlib import Path

import services.core

FORBIDDEN = {"paho", "psycopg", "psycopg_pool", "fastapi", "starlette", "asyncio", "uvicorn",
             "socket", "time"}  # fmt: skip


def test_core_imports_no_io_library() -> None:
    """services/core stays pure: no broker, database, web framework, event loop or clock."""
    offenders = []
    for path in Path(services.core.__file__).parent.glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] in FORBIDDEN]
    assert offenders == []
