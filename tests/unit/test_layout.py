"""The layout's rules, checked: what each package may import."""

from __future__ import annotations

import ast
import fnmatch
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("contract", "ingest", "projector", "api", "server", "deploy")


def imported(package: str, skip: frozenset[str] = frozenset()) -> set[str]:
    """Top-level modules the package's files import (but those in `skip`, paths from the root)."""
    found: set[str] = set()
    for path in (ROOT / package).rglob("*.py"):
        if str(path.relative_to(ROOT)) in skip:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                found.add(node.module.split(".")[0])
    return found - {"__future__"}


def imported_modules(package: str) -> dict[str, set[str]]:
    """Each module of the package (dotted) with the dotted names it imports from other packages."""
    found: dict[str, set[str]] = {}
    for path in (ROOT / package).rglob("*.py"):
        dotted = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        names = found.setdefault(dotted, set())
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names.add(node.module)
    return found


PROCESS_EDGE = frozenset(
    {"deploy.settings", "deploy.backoff", "deploy.redis_nodes", "deploy.projections_client"}
)
"""What every process reads at its edge: the settings, the retry policy, the one way to reach Redis. The rest
of deploy/ (supervisor, images, clusters) runs processes and is imported by none of them."""

HTTP_PARTS = frozenset({"server.answer", "server.params", "server.failures"})
"""What the HTTP paths are made of (an answer, query parameters, the 400 and 503 failures): the write and read
sides build answers with them, and the rest of server/ serves those sides."""


def test_the_contract_imports_nothing_but_the_standard_library_and_msgspec() -> None:
    outside = imported("contract") - set(sys.stdlib_module_names)
    assert outside - {"msgspec", "contract"} == set()


@pytest.mark.parametrize(("leaves", "allowed"), [(PROCESS_EDGE, {"redis"}), (HTTP_PARTS, set())])
def test_the_shared_leaves_import_only_the_contract_and_each_other(
    leaves: frozenset[str], allowed: set[str]
) -> None:
    modules = {**imported_modules("deploy"), **imported_modules("server")}
    for leaf in leaves:
        outside = {
            name
            for name in modules[leaf]
            if name.split(".")[0] not in set(sys.stdlib_module_names) | allowed | {"contract"}
            and name not in leaves
        }
        assert outside == set(), leaf


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
    """Packages import downwards; deploy's process edge and server's HTTP parts are leaves anyone may use."""
    leaves = PROCESS_EDGE | HTTP_PARTS
    crossing = {
        f"{module} imports {name}"
        for module, names in imported_modules(package).items()
        for name in names
        if name.split(".")[0] in forbidden and name not in leaves
    }
    assert crossing == set()


def modules(package: str) -> list[Path]:
    """Every module and subpackage of the package, however deep."""
    root = ROOT / package
    found = [p for p in root.rglob("*.py") if p.name != "__init__.py"]
    found += [p.parent for p in root.rglob("__init__.py") if p.parent != root]
    return found


@pytest.mark.parametrize("package", PACKAGES)
def test_no_module_shadows_the_standard_library(package: str) -> None:
    """A module named like a standard-library one (`inspect`, `secrets`...) confuses readers and tools."""
    shadowing = {str(p.relative_to(ROOT)) for p in modules(package) if p.stem in sys.stdlib_module_names}
    assert shadowing == set()


def test_no_projector_module_shares_a_file_name_with_another() -> None:
    """Within the projector, a file name says alone what the module holds."""
    stems: dict[str, list[str]] = {}
    for p in modules("projector"):
        stems.setdefault(p.stem, []).append(str(p.relative_to(ROOT)))
    assert {stem: paths for stem, paths in stems.items() if len(paths) > 1} == {}


def test_every_subpackage_is_installed() -> None:
    """setuptools finds the subpackages (and mypy checks them) only through the include patterns."""
    import tomllib

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    include = config["packages"]["find"]["include"]
    for package in PACKAGES:
        for init in (ROOT / package).rglob("__init__.py"):
            dotted = ".".join(init.parent.relative_to(ROOT).parts)
            assert any(fnmatch.fnmatchcase(dotted, pattern) for pattern in include), dotted
    for lua in (ROOT / "projector").rglob("*.lua"):
        assert lua.parent.name == "scripts", f"{lua}: every Lua script lives in projector/projections/scripts"


def test_the_fold_is_pure() -> None:
    """No I/O in the fold: it imports the standard library, msgspec, the contract and itself only."""
    found: set[str] = set()
    for path in (ROOT / "projector" / "fold").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                found.add(node.module)
    allowed = set(sys.stdlib_module_names) | {"msgspec"}
    outside = {
        m
        for m in found
        if m.split(".")[0] not in allowed and not m.startswith(("contract", "projector.fold"))
    }
    assert outside == set()


PROJECTOR_RANKS = {
    "__main__": 6,
    "cli": 5,
    "live": 4,
    "replay": 4,
    "audit": 4,
    "log": 3,
    "projections": 3,
    "metrics": 2,
    "reach": 2,
    "fold": 1,
}
"""Each part of the projector (a subpackage, or a module beside them) and its rank: a part imports only
parts of a lower rank, never one of its own, so imports inside the projector run one way."""


def projector_part(path: Path) -> str:
    """The part of the projector a file belongs to: its subpackage, or the module's own name."""
    first = path.relative_to(ROOT / "projector").parts[0]
    return first.removesuffix(".py")


def projector_parts_imported(path: Path) -> set[str]:
    """The parts of the projector the file imports (relative imports resolved, deferred ones too)."""
    package = list(path.relative_to(ROOT).parent.parts)
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name.split(".") for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = base + (node.module.split(".") if node.module else [])
            names = [[*module, alias.name] for alias in node.names]
        else:
            continue
        found |= {name[1] for name in names if name[0] == "projector" and len(name) > 1}
    return found


def test_every_part_of_the_projector_has_a_rank() -> None:
    parts = {projector_part(p) for p in (ROOT / "projector").rglob("*.py")} - {"__init__"}
    assert parts == set(PROJECTOR_RANKS)


def test_the_projector_package_itself_imports_none_of_its_parts() -> None:
    assert projector_parts_imported(ROOT / "projector" / "__init__.py") == set()


@pytest.mark.parametrize("part", sorted(PROJECTOR_RANKS))
def test_inside_the_projector_imports_run_one_way(part: str) -> None:
    """`__main__` on top, then `cli`; then `live`, `replay` and `audit`; then `log` and `projections`;
    then `metrics` and `reach`; `fold` at the bottom. A part may import only parts below its own rank."""
    rank = PROJECTOR_RANKS[part]
    files = [p for p in (ROOT / "projector").rglob("*.py") if projector_part(p) == part]
    assert files
    upward = {
        f"{path.relative_to(ROOT)} imports {other}"
        for path in files
        for other in projector_parts_imported(path)
        if other != part and PROJECTOR_RANKS.get(other, rank) >= rank
    }
    assert upward == set()


def module_graph(package: str) -> dict[str, set[str]]:
    """Each module of the package (dotted) -> the package's modules it imports, deferred imports too."""
    names = {".".join(p.relative_to(ROOT).with_suffix("").parts) for p in (ROOT / package).rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for path in (ROOT / package).rglob("*.py"):
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                found |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
        me = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        graph[me] = (found & names) - {me}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One path around each cycle found (empty: the imports form no cycle)."""
    found: list[list[str]] = []
    done: set[str] = set()

    def visit(node: str, path: list[str]) -> None:
        if node in path:
            found.append([*path[path.index(node) :], node])
            return
        if node in done:
            return
        for other in sorted(graph.get(node, ())):
            visit(other, [*path, node])
        done.add(node)

    for node in sorted(graph):
        visit(node, [])
    return found


def test_the_cycle_finder_finds_a_deferred_import_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_module_cycle_in_deploy() -> None:
    """No two deploy modules import each other, however indirectly or late (a deferred import)."""
    assert cycles(module_graph("deploy")) == []
