"""The cell layout: a cell's keys in order, an hour's cells, and the header every cell script reads."""

from __future__ import annotations

import re
from pathlib import Path

from contract.buckets import quarter_token
from contract.cells import GUARD_KEYS, HEADER_ARGS, KEYS_PER_CELL, ROLES, Cell, CellLayout
from contract.hours import hour_token
from contract.keys import GEN_PLACEHOLDER, Keys

ROOT = Path(__file__).resolve().parents[2]
LAYOUT = CellLayout(Keys("hg"))
HOUR = 493_900


def test_a_cells_keys_are_its_users_then_its_counts_under_the_partitions_tag() -> None:
    cell = Cell(7, 3, hour_token(HOUR))
    assert LAYOUT.keys_of(cell) == (
        f"hg:{{p3}}:g7:{hour_token(HOUR)}:users",
        f"hg:{{p3}}:g7:{hour_token(HOUR)}:counts",
    )
    assert (LAYOUT.users(cell), LAYOUT.counts(cell)) == LAYOUT.keys_of(cell)
    assert len(LAYOUT.keys_of(cell)) == KEYS_PER_CELL == len(ROLES)


def test_templates_heads_and_tails_spell_the_same_keys() -> None:
    token = quarter_token(HOUR, 2)
    template = LAYOUT.template(3, token)
    assert tuple(t.replace(GEN_PLACEHOLDER, "9") for t in template) == LAYOUT.keys_of(Cell(9, 3, token))
    assert tuple(LAYOUT.head(9, 3) + token + tail for tail in LAYOUT.tails()) == LAYOUT.keys_of(
        Cell(9, 3, token)
    )


def test_an_hours_cells_are_the_hour_then_its_four_quarters() -> None:
    cells = LAYOUT.hour_cells(1, 0, HOUR)
    assert [c.token for c in cells] == [hour_token(HOUR)] + [quarter_token(HOUR, q) for q in range(4)]
    assert Cell.of_hour(1, 0, HOUR) == cells[0]


def test_a_call_puts_the_guard_then_the_named_keys_then_each_cells_keys() -> None:
    cells = LAYOUT.hour_cells(4, 2, HOUR)
    keys, header = LAYOUT.call(4, 2, check=4, epoch="e", watermark=11, named=["n1", "n2"], cells=cells)
    keys_ = Keys("hg")
    assert keys[:GUARD_KEYS] == [keys_.generation(2), keys_.fence(2), keys_.watermark(4, 2)]
    assert keys[GUARD_KEYS : GUARD_KEYS + 2] == ["n1", "n2"]
    assert keys[GUARD_KEYS + 2 :] == LAYOUT.cell_keys(cells)
    assert header == [4, "e", 11, 2, KEYS_PER_CELL]
    assert len(header) == HEADER_ARGS


def test_the_lua_prelude_reads_the_header_the_layout_writes() -> None:
    """cells.lua finds the scripts' own arguments and the first cell where contract/cells.py puts them."""
    prelude = (ROOT / "projector" / "projections" / "scripts" / "cells.lua").read_text()
    assert re.search(rf"^local OWN = {HEADER_ARGS + 1}$", prelude, re.M)
    assert re.search(rf"^local FIRST_CELL = {GUARD_KEYS + 1} \+ NAMED$", prelude, re.M)
    assert "local GENERATION, FENCE, WATERMARK = KEYS[1], KEYS[2], KEYS[3]" in prelude
