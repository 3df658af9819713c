"""The shape the package keeps: pytest only at the top level, small modules and functions."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest_madengine

PACKAGE = Path(pytest_madengine.__file__).parent
SUBPACKAGES = ("zoo", "gpus", "engine", "report")

# Imports every module of the subpackages with pytest made unimportable: one that needs it,
# directly or through anything it imports, fails here.
BLOCK_PYTEST = """
import importlib, pkgutil, sys

class NoPytest:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("pytest", "_pytest", "pluggy"):
            raise ImportError(f"{name} imported below the top level")
        return None

sys.meta_path.insert(0, NoPytest())
import pytest_madengine
for sub in sys.argv[1:]:
    package = importlib.import_module(f"pytest_madengine.{sub}")
    for module in pkgutil.walk_packages(package.__path__, f"pytest_madengine.{sub}."):
        importlib.import_module(module.name)
        print(module.name)
"""


def test_nothing_below_the_top_level_imports_pytest() -> None:
    done = subprocess.run(
        [sys.executable, "-c", BLOCK_PYTEST, *SUBPACKAGES], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    imported = done.stdout.split()
    assert "pytest_madengine.engine.local" in imported and "pytest_madengine.report.summary" in imported


def _functions() -> list[tuple[str, ast.FunctionDef | ast.AsyncFunctionDef]]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text("utf-8"))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                found.append((f"{path.relative_to(PACKAGE)}:{node.name}", node))
    return found


def test_no_module_above_400_lines() -> None:
    sizes = {str(p.relative_to(PACKAGE)): len(p.read_text("utf-8").splitlines()) for p in PACKAGE.rglob("*.py")}
    assert {name: lines for name, lines in sizes.items() if lines > 400} == {}


def test_no_function_above_60_lines() -> None:
    long = {name: node.end_lineno - node.lineno + 1 for name, node in _functions() if node.end_lineno}
    assert {name: lines for name, lines in long.items() if lines > 60} == {}


def test_no_function_with_more_than_6_parameters() -> None:
    def count(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
        args = node.args
        names = [a.arg for a in (*args.posonlyargs, *args.args, *args.kwonlyargs)]
        names += [a.arg for a in (args.vararg, args.kwarg) if a is not None]
        return len([n for n in names if n not in ("self", "cls")])

    assert {name: count(node) for name, node in _functions() if count(node) > 6} == {}
