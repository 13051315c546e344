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


MAX_SCRIPT_LINES = 160


def scripts() -> list[Path]:
    return sorted(path for package in PACKAGES for path in (ROOT / package).rglob("*.lua"))


def test_every_lua_script_opens_with_a_sentence_on_what_it_is_for_and_stays_short() -> None:
    """Lua files are code too: the same front line as a module, and a length that reads in one sitting."""
    found = scripts()
    assert found, "no Lua scripts found"
    silent = [str(p.relative_to(ROOT)) for p in found if not p.read_text().startswith("-- ")]
    long = [str(p.relative_to(ROOT)) for p in found if len(p.read_text().splitlines()) > MAX_SCRIPT_LINES]
    assert (silent, long) == ([], [])


def test_cell_scripts_find_keys_only_through_the_cell_header_and_run_its_one_guard() -> None:
    """Every script that writes cells runs behind cells.lua: it calls its guard() and never indexes KEYS
    or reads the header's arguments itself, so the order of a cell's keys has one owner
    (contract/cells.py, read by cells.lua)."""
    from projector.projections.scripts import CELL_SCRIPTS

    folder = ROOT / "projector" / "projections" / "scripts"
    wrong = []
    for name in CELL_SCRIPTS:
        text = (folder / f"{name}.lua").read_text()
        code = "\n".join(line.split("--")[0] for line in text.splitlines())
        if "guard()" not in code:
            wrong.append(f"{name}.lua runs no guard()")
        if "KEYS[" in code:
            wrong.append(f"{name}.lua indexes KEYS itself")
        if any(f"ARGV[{i}]" in code for i in range(1, 6)):
            wrong.append(f"{name}.lua reads the cell header's arguments itself")
    assert wrong == []
