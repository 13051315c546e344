"""`just --list` shows each recipe's doc comment (the one comment line just above it), so each recipe
has one, and it is a whole sentence on that line."""

from __future__ import annotations

import re
from pathlib import Path

JUSTFILE = Path(__file__).resolve().parents[2] / "justfile"
RECIPE = re.compile(r"^([A-Za-z_][\w-]*)(\s[^:=]*)?:(?!=)")


def doc_comments(text: str) -> dict[str, list[str]]:
    """Each recipe's comment block: the comment lines just above it (and above its attributes), in order."""
    lines = text.splitlines()
    found: dict[str, list[str]] = {}
    for i, line in enumerate(lines):
        match = RECIPE.match(line)
        if match is None:
            continue
        above = i - 1
        while above >= 0 and lines[above].startswith("["):  # attributes such as [no-exit-message]
            above -= 1
        block: list[str] = []
        while above >= 0 and lines[above].startswith("#"):
            block.insert(0, lines[above])
            above -= 1
        found[match.group(1)] = block
    return found


def test_the_reader_sees_recipes_their_attributes_and_whole_comment_blocks() -> None:
    text = "x := 'y'\n\n# One.\n# Two.\n[no-exit-message]\nup *args:\n    run\n\nbare:\n    run\n"
    assert doc_comments(text) == {"up": ["# One.", "# Two."], "bare": []}


def test_every_recipe_has_a_doc_comment_of_one_whole_sentence_on_one_line() -> None:
    recipes = doc_comments(JUSTFILE.read_text())
    assert {"up", "test", "unit", "bench", "bench-commits"} <= recipes.keys()
    for name, block in recipes.items():
        assert len(block) == 1, f"{name}: `just --list` shows only the last of {block}"
        assert block[0].endswith("."), f"{name}: {block[0]!r} is not a whole sentence"
