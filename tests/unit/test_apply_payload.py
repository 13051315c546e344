"""What one apply sends apply.lua: each cell named once, events grouped per quarter-hour with the
quarter, its hour and one day rollup per phase, keyed events naming their group."""

from __future__ import annotations

from contract.buckets import day_tokens, quarter_token
from contract.cells import Cell
from contract.hours import hour_token
from contract.schema import Kind
from projector.fold.deltas import Deltas, HourDelta, Keyed
from projector.projections.store import apply_payload

HOUR = 490_000
PHASES = (0, 240, 1110)


def test_cells_are_named_once_and_groups_name_the_quarter_its_hour_and_its_days() -> None:
    delta = HourDelta.of({"ann"}, 1, 0, quarter=0)
    delta.merge(HourDelta.of({"bob", "cid"}, 0, 2, quarter=3))
    deltas = Deltas(
        hours={HOUR: delta},
        keyed=[Keyed("k", "dan", 5, HOUR, Kind.CLICK, 2), Keyed("k2", "ann", 6, HOUR, Kind.IMPRESSION, 0)],
        last_seq=3,
    )
    cells, args = apply_payload(7, 1, PHASES, deltas)
    count = len(cells)
    tokens = [str(t) for t in args[:count]]
    assert len(set(tokens)) == count
    assert cells == [Cell(7, 1, t) for t in tokens]
    rest = args[count:]
    groups = int(rest[0])
    assert groups == 3  # quarters 0 and 3 (unkeyed), then quarter 2 (keyed only)
    named = []
    for g in range(groups):
        numbers, clicks, impressions, users = rest[1 + 4 * g : 5 + 4 * g]
        named.append(({tokens[int(c) - 1] for c in str(numbers).split(",")}, clicks, impressions, users))
    for (named_cells, *_), quarter in zip(named, (0, 3, 2), strict=True):
        assert named_cells == {
            quarter_token(HOUR, quarter),
            hour_token(HOUR),
            *day_tokens(HOUR, quarter, PHASES),
        }
    assert named[0][1:] == (1, 0, "ann")
    assert named[1][1:3] == (0, 2)
    assert sorted(str(named[1][3]).split("\n")) == ["bob", "cid"]
    assert named[2][1:] == (0, 0, "")
    assert rest[-1] == "5\x1f3\x1fc\x1fdan\x1fk\x1e6\x1f1\x1fi\x1fann\x1fk2\x1e"


def test_nothing_to_apply_names_no_cell() -> None:
    cells, args = apply_payload(1, 0, PHASES, Deltas(last_seq=9))
    assert (cells, args) == ([], [0, ""])
