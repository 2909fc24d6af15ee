"""The import rules of architecture.md, checked on the source: a layer that reaches past its
neighbours fails here, not in review."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "portway"

# layer -> the portway layers it may import (itself always allowed).
ALLOWED: dict[str, set[str]] = {
    "model": set(),
    "store": {"model"},
    "runtime": {"model"},
    "gateway": {"model"},
    "dns": {"model"},
    "control": {"model", "store", "runtime"},
    "api": {"control", "model"},
    "client": {"config"},
    "cli": {"client", "config", "app"},
    "config": set(),
}


def _layer_of(path: Path) -> str:
    rel = path.relative_to(SRC)
    return rel.parts[0].removesuffix(".py")


def _portway_imports(path: Path, root: Path = SRC) -> set[str]:
    """The top-level portway packages a module imports, absolute or relative."""
    tree = ast.parse(path.read_text(), filename=str(path))
    depth_of_package = len(path.relative_to(root).parts) - 1
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == "portway" and len(parts) > 1:
                    found.add(parts[1])
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                parts = (node.module or "").split(".")
                if parts[0] == "portway":
                    found.update([parts[1]] if len(parts) > 1 else [a.name for a in node.names])
            elif node.level > depth_of_package:
                # `from .. import x` / `from ..x import y` reaching the package root.
                if node.module:
                    found.add(node.module.split(".")[0])
                else:
                    found.update(a.name for a in node.names)
    return found


def _modules() -> list[Path]:
    return sorted(p for p in SRC.rglob("*.py") if _layer_of(p) in ALLOWED)


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(SRC)))
def test_module_respects_layer_rules(path: Path) -> None:
    layer = _layer_of(path)
    reached = _portway_imports(path) - {layer, "__init__", "__version__"}
    assert reached <= ALLOWED[layer], f"{layer} may not import {sorted(reached - ALLOWED[layer])}"


def test_model_uses_only_the_standard_library() -> None:
    import sys

    for path in (SRC / "model").rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name.split(".")[0] for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module.split(".")[0]]
            for name in names:
                assert name in sys.stdlib_module_names or name == "__future__", (
                    f"{path.name} imports {name}, which is not in the standard library"
                )


def test_the_checker_catches_a_violation(tmp_path: Path) -> None:
    (tmp_path / "model").mkdir()
    bad = tmp_path / "model" / "probe.py"
    bad.write_text("from ..store import sqlite\nfrom portway.api import app\nfrom . import names\n")
    assert _portway_imports(bad, tmp_path) == {"store", "api"}
