"""caseway.protocol is sans-I/O: it imports no network, database, async, clock or randomness
source, and keys never imports node (BRIEF §1)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parent.parent
FORBIDDEN_IMPORTS = {"aiohttp", "aiosqlite", "asyncio", "socket", "sqlite3", "random",
                     "secrets", "time", "datetime", "structlog", "caseway.node", "caseway.keys",
                     "urllib.request", "http", "os", "subprocess", "threading"}
FORBIDDEN_CALLS = {("os", "urandom"), ("utils", "random"), ("time", "time"),
                   ("datetime", "now"), ("datetime", "utcnow"), ("date", "today")}


def _imports(tree: ast.AST) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_protocol_imports_no_io_clock_or_randomness() -> None:
    files = sorted((ROOT / "protocol").glob("*.py"))
    assert files
    for path in files:
        tree = ast.parse(path.read_text(), filename=str(path))
        for name in _imports(tree):
            top = {name, name.split(".")[0], ".".join(name.split(".")[:2])}
            assert not top & FORBIDDEN_IMPORTS, f"{path.name} imports {name}"
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
                call = (node.value.id, node.attr)
                assert call not in FORBIDDEN_CALLS, f"{path.name}: {node.attr}"
            if isinstance(node, ast.Name) and node.id == "open":
                raise AssertionError(f"{path.name} calls open()")


def test_importing_protocol_loads_no_network_or_async_module() -> None:
    code = "\n".join([
        "import sys, importlib, pkgutil, caseway.protocol as p",
        "for m in pkgutil.iter_modules(p.__path__):",
        "    importlib.import_module('caseway.protocol.' + m.name)",
        "bad = {'aiohttp', 'aiosqlite', 'asyncio', 'structlog', 'caseway.node', 'caseway.keys'}",
        "print(sorted(bad & set(sys.modules)))",
    ])
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_keys_never_imports_node() -> None:
    for path in sorted((ROOT / "keys").glob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        assert not any(n.startswith("caseway.node") for n in _imports(tree)), path.name
