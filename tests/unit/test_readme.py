"""The README is a front door, and true: at most 250 lines, its links resolve, its layout maps every
package, and docs/layout.md lists exactly the modules that exist; every test file and test the README
and docs/ cite exists."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("contract", "ingest", "projector", "api", "server", "deploy")
README = ROOT / "README.md"
LAYOUT = ROOT / "docs" / "layout.md"


def layout_tree() -> list[str]:
    """The lines of docs/layout.md's module tree (its text block)."""
    return LAYOUT.read_text().split("```text\n", 1)[1].split("```", 1)[0].splitlines()


def readme_layout() -> str:
    """The README's `## Layout` section."""
    text = README.read_text()
    section = text[text.index("\n## Layout\n") + 1 :]
    return section[: section.index("\n## ")]


def listed_modules(tree: list[str]) -> set[str]:
    """Paths of the modules the tree names: a top-level `name/` line opens a package, and the indented
    lines below it name paths inside it (first word of the line)."""
    found: set[str] = set()
    package = ""
    for line in tree:
        word = line.split()[0] if line.strip() else ""
        if not line.startswith(" "):
            package = word
        elif word.endswith(".py"):
            found.add(package + word)
    return found


def test_the_readme_is_at_most_250_lines() -> None:
    assert len(README.read_text().splitlines()) <= 250


def test_the_layout_names_every_module_and_no_other() -> None:
    listed = listed_modules(layout_tree())
    present = {
        path.relative_to(ROOT).as_posix()
        for package in PACKAGES
        for path in (ROOT / package).rglob("*.py")
        if path.name != "__init__.py"
    }
    assert sorted(present - listed) == [], "modules missing from docs/layout.md"
    assert sorted(listed - present) == [], "modules in docs/layout.md that do not exist"


def test_the_readme_maps_each_package_on_one_line_and_links_the_module_list() -> None:
    """A short map where to start reading, not the inventory (which once took 101 of its 250 lines)."""
    section = readme_layout()
    assert "(docs/layout.md)" in section
    for package in (*PACKAGES, "tests"):
        rows = [line for line in section.splitlines() if line.startswith(f"| `{package}/` |")]
        assert len(rows) == 1, f"{package}/ is not one row of the README's layout"
    assert len(section.splitlines()) < 20


def test_the_layout_reader_sees_nested_paths() -> None:
    tree = [
        "projector/   folds",
        "  __main__.py  cli",
        "  log/pull.py  reader",
        "  scripts/  lua",
        "api/",
        "  get.py",
    ]
    assert listed_modules(tree) == {"projector/__main__.py", "projector/log/pull.py", "api/get.py"}


def anchors(doc: Path) -> set[str]:
    """The fragments GitHub gives a document's headings: lower case, punctuation dropped, spaces to -."""
    found = set()
    for heading in re.findall(r"^#+ (.+)$", doc.read_text(), flags=re.MULTILINE):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        found.add(slug)
    return found


def test_every_relative_link_in_the_readme_and_docs_resolves_to_a_file_and_heading() -> None:
    broken = []
    for doc in [README, *sorted((ROOT / "docs").glob("*.md"))]:
        for target, fragment in re.findall(r"\]\(([^)#\s]*)(?:#([^)\s]*))?\)", doc.read_text()):
            if "://" in target:
                continue
            linked = (doc.parent / target) if target else doc
            if not linked.exists():
                broken.append(f"{doc.relative_to(ROOT)} -> {target}")
            elif fragment and linked.suffix == ".md" and fragment not in anchors(linked):
                broken.append(f"{doc.relative_to(ROOT)} -> {target}#{fragment}")
    assert broken == []


CITED = re.compile(r"`(?:tests/)?((?:unit|integration|bench)/[\w/]+\.py)(?:::(\w+))?[^`]*`")
"""A test cited as docs/testing.md does: `integration/test_x.py::test_name` (tests/ optional)."""


def cited_tests(text: str) -> list[tuple[str, str]]:
    """(path under tests/, name or "") of every test file or test the text cites."""
    return CITED.findall(text)


def defined(path: Path) -> set[str]:
    """The top-level functions and classes of a test module."""
    nodes = ast.parse(path.read_text()).body
    return {n.name for n in nodes if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)}


def test_the_citation_reader_sees_files_and_tests() -> None:
    text = (
        "| x | y | `integration/test_a.py::test_b`, `tests/unit/test_c.py` |\n"
        "`unit/test_d.py::test_e[param]` and `integration/test_f.py` (a file), not `server/app.py`"
    )
    assert cited_tests(text) == [
        ("integration/test_a.py", "test_b"),
        ("unit/test_c.py", ""),
        ("unit/test_d.py", "test_e"),
        ("integration/test_f.py", ""),
    ]


def test_every_test_the_readme_and_docs_cite_exists() -> None:
    """A test renamed or moved leaves its citation behind (testing.md once named
    test_http_contract::test_readiness_names_a_missing_projector a long while after it moved)."""
    missing, seen = [], 0
    for doc in [README, *sorted((ROOT / "docs").glob("*.md"))]:
        for path, name in cited_tests(doc.read_text()):
            seen += 1
            module = ROOT / "tests" / path
            if not module.is_file():
                missing.append(f"{doc.name}: {path}")
            elif name and name not in defined(module):
                missing.append(f"{doc.name}: {path}::{name}")
    assert seen > 100  # the pattern still matches how the docs cite tests
    assert missing == []
