"""The codebase keeps the shape docs/architecture.md promises: imports run one way, modules stay readable.

These are checks of the source, not of behaviour: they fail when a change breaks the layout a newcomer relies on.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "archsearch"
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 80
# Function-level imports are allowed only for heavy optional dependencies (and in the CLI's command modules, which
# import their stage on demand so `archsearch --help` or `count` does not pay for torch, Ray and Optuna).
LAZY_ALLOWED = ("ray", "plotly", "optuna_dashboard", "matplotlib", "fvcore", "fcntl", "torchvision",
                "archsearch.orchestrate.ray_backend")


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_import_contracts_hold() -> None:
    """import-linter's contracts in pyproject.toml: stages layered, no cycles, torch-free arch/, Ray and Optuna
    confined to their rooms."""
    lint = Path(sys.executable).parent / "lint-imports"
    proc = subprocess.run([str(lint), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_module_is_readable(path: Path) -> None:
    source = path.read_text()
    assert source.count("\n") <= MAX_MODULE_LINES, f"{path.name}: {source.count(chr(10))} lines"
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            length = node.end_lineno - node.lineno + 1
            assert length <= MAX_FUNCTION_LINES, f"{path.name}:{node.lineno} {node.name} is {length} lines"


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_at_the_top(path: Path) -> None:
    """Inside functions, only heavy optional dependencies are imported (each with a comment saying why)."""
    if path.parent.name == "commands" or path == PACKAGE / "__init__.py":
        return
    tree = ast.parse(path.read_text())
    for fn in ast.walk(tree):
        if not isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        for node in ast.walk(fn):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            for name in names:
                assert name.startswith(LAZY_ALLOWED), f"{path.name}:{node.lineno} imports {name} inside {fn.name}"
