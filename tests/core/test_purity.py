"""The pure core imports no I/O library and reads no clock."""

from __future__ import annotations

import ast
from pathlib import Path

import services.core

FORBIDDEN = {"paho", "psycopg", "psycopg_pool", "fastapi", "starlette", "asyncio", "uvicorn",
             "socket", "time"}  # fmt: skip
# Calls that read the clock: (the object's last name, attribute). Time comes in as an
# argument (`now=`), so none of these appears in the core, not even as `datetime.datetime.now`.
CLOCK_READS = {("datetime", "now"), ("datetime", "utcnow"), ("datetime", "today"),
               ("date", "today"), ("time", "time"), ("time", "monotonic")}  # fmt: skip


def _core_modules() -> list[Path]:
    return sorted(Path(services.core.__file__).parent.rglob("*.py"))


def _last_name(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return None


def clock_reads(source: str) -> list[str]:
    """Return ``line: name.attr`` for each clock read in ``source``."""
    return [
        f"{node.lineno}: {_last_name(node.value)}.{node.attr}"
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Attribute) and (_last_name(node.value), node.attr) in CLOCK_READS
    ]


def test_core_imports_no_io_library() -> None:
    """services/core stays pure: no broker, database, web framework, event loop or clock."""
    offenders = []
    for path in _core_modules():
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] in FORBIDDEN]
    assert offenders == []


def test_core_reads_no_clock() -> None:
    """services/core never reads the clock: no datetime.now, utcnow, date.today or time.*."""
    offenders = [
        f"{path.name}:{read}" for path in _core_modules() for read in clock_reads(path.read_text())
    ]
    assert offenders == []


def test_clock_reads_are_found_however_they_are_spelled() -> None:
    """A clock read is found through the module, the class or a bare import."""
    source = (
        "import datetime as dt\nfrom datetime import date, datetime\n"
        "a = dt.datetime.now(dt.UTC)\nb = datetime.utcnow()\nc = date.today()\n"
        "d = time.monotonic()\ne = dt.timedelta(seconds=1)\n"
    )
    assert clock_reads(source) == [
        "3: datetime.now", "4: datetime.utcnow", "5: date.today", "6: time.monotonic"
    ]  # fmt: skip
