"""The layout's rules, checked: what each package may import."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("contract", "ingest", "projector", "api", "server", "deploy")


def imported(package: str) -> set[str]:
    """Top-level modules the package's files import."""
    found: set[str] = set()
    for path in (ROOT / package).glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                found.add(node.module.split(".")[0])
    return found - {"__future__"}


def test_the_contract_imports_nothing_but_the_standard_library_and_msgspec() -> None:
    outside = imported("contract") - set(sys.stdlib_module_names) - {"msgspec", "contract"}
    assert outside == set()


@pytest.mark.parametrize(
    ("package", "forbidden"),
    [
        ("ingest", {"projector", "api", "server", "deploy"}),
        ("api", {"projector", "ingest", "server", "deploy"}),
        ("projector", {"ingest", "api", "server", "deploy"}),
        ("server", {"projector", "deploy"}),
    ],
)
def test_imports_flow_one_way(package: str, forbidden: set[str]) -> None:
    assert imported(package) & forbidden == set()
