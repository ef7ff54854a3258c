"""The engine stays pure: no IO libraries on import, none named in its source."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import engine

ENGINE_DIR = Path(engine.__file__).parent
# asyncio is absent from this list: python-statemachine imports it for its async engine.
FORBIDDEN_ON_IMPORT = ("quart", "hypercorn", "httpx", "anyio", "structlog", "werkzeug", "h11")
FORBIDDEN_IN_SOURCE = {
    "asyncio", "socket", "time", "random", "httpx", "anyio", "quart", "hypercorn",
    "threading", "secrets", "uuid", "os", "subprocess",
}  # fmt: skip


def test_importing_engine_loads_no_io_library() -> None:
    probe = (
        "import sys, engine, engine.session, engine.sse, engine.upstream_errors;"
        f"print(','.join(m for m in {FORBIDDEN_ON_IMPORT!r} if m in sys.modules))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    ).stdout.strip()
    assert loaded == ""


def imported_roots(path: Path) -> set[str]:
    roots: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


def test_engine_source_imports_nothing_that_does_io() -> None:
    offenders = {
        path.name: sorted(imported_roots(path) & FORBIDDEN_IN_SOURCE)
        for path in sorted(ENGINE_DIR.glob("*.py"))
        if imported_roots(path) & FORBIDDEN_IN_SOURCE
    }
    assert offenders == {}


def test_engine_exports_are_sorted_and_complete() -> None:
    # Sorted as isort does: constants, then classes, then functions.
    def order(name: str) -> tuple[bool, bool, str]:
        return (not name.isupper(), not name[0].isupper(), name)

    assert engine.__all__ == sorted(engine.__all__, key=order)
    assert all(hasattr(engine, name) for name in engine.__all__)
