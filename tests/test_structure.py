"""The architecture's rules, checked on the source (issue 11): size budget and layering.

- no module in ``otcluster/`` or ``otcluster_video/`` over 450 lines, no class over 400, no
  function over 120 (docstrings included);
- layers point one way: ``otcluster`` never imports ``otcluster_video``; nothing in the solver
  package imports ``torch.nn``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("otcluster", "otcluster_video")
MAX_MODULE, MAX_CLASS, MAX_FUNCTION = 450, 400, 120


def _modules(*packages: str) -> list[Path]:
    return sorted(p for pkg in packages for p in (ROOT / pkg).rglob("*.py"))


def _imports(tree: ast.AST, path: Path) -> set[str]:
    """Absolute names of every module an import statement in ``tree`` names."""
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    if path.name == "__init__.py":
        package = ".".join(path.relative_to(ROOT).parts[:-1])
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parts = parts[: len(parts) - node.level + 1]
                base = ".".join(parts + ([node.module] if node.module else []))
            names.add(base)
            names.update(f"{base}.{a.name}" for a in node.names)
    return names


@pytest.mark.parametrize("path", _modules(*PACKAGES), ids=lambda p: str(p.relative_to(ROOT)))
def test_size_budget(path: Path) -> None:
    src = path.read_text(encoding="utf-8")
    n_lines = src.count("\n")
    assert n_lines <= MAX_MODULE, f"{path.name}: {n_lines} lines (budget {MAX_MODULE})"
    for node in ast.walk(ast.parse(src)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            size = node.end_lineno - node.lineno + 1
            limit = MAX_CLASS if isinstance(node, ast.ClassDef) else MAX_FUNCTION
            assert size <= limit, f"{path.name}:{node.lineno} {node.name}: {size} lines (budget {limit})"


def test_core_never_imports_the_video_package() -> None:
    offenders = [
        str(p.relative_to(ROOT)) for p in _modules("otcluster")
        if any(n.split(".")[0] == "otcluster_video" for n in _imports(ast.parse(p.read_text()), p))
    ]
    assert offenders == []


def test_solver_package_has_no_torch_nn() -> None:
    solver = ROOT / "otcluster" / "_solver"
    assert solver.is_dir()
    offenders = [
        str(p.relative_to(ROOT)) for p in sorted(solver.rglob("*.py"))
        if any(n == "torch.nn" or n.startswith("torch.nn.") for n in _imports(ast.parse(p.read_text()), p))
    ]
    assert offenders == []


def test_import_check_sees_relative_imports() -> None:
    """The layering checks resolve relative imports (a check that saw none could not fail)."""
    path = ROOT / "otcluster" / "_solver" / "x.py"
    names = _imports(ast.parse("from ..metrics import a\nfrom . import _ops\nimport torch.nn as nn\n"), path)
    assert {"otcluster.metrics", "otcluster.metrics.a", "otcluster._solver._ops", "torch.nn"} <= names
