"""The code's shape, checked: no module over 400 lines and no function over 80 outside tests/, unless
its own docstring says why ("is long because ...")."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("contract", "ingest", "projector", "api", "server", "deploy")
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 80
EXCUSE = "is long because"


def modules() -> list[Path]:
    return sorted(path for package in PACKAGES for path in (ROOT / package).rglob("*.py"))


def excused(node: ast.Module | ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    return EXCUSE in (ast.get_docstring(node) or "")


def test_no_module_is_over_400_lines_unless_it_says_why() -> None:
    long = []
    for path in modules():
        text = path.read_text()
        if len(text.splitlines()) > MAX_MODULE_LINES and not excused(ast.parse(text)):
            long.append(f"{path.relative_to(ROOT)}: {len(text.splitlines())} lines")
    assert long == []


def test_no_function_is_over_80_lines_unless_it_says_why() -> None:
    long = []
    for path in modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                assert node.end_lineno is not None
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES and not excused(node):
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}: {lines} lines")
    assert long == []


def test_every_module_opens_with_a_sentence_on_what_it_is_for() -> None:
    silent = [str(p.relative_to(ROOT)) for p in modules() if not ast.get_docstring(ast.parse(p.read_text()))]
    assert silent == []
