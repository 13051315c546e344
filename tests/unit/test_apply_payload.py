"""What one apply sends apply.lua: each cell named once, events grouped per quarter-hour with the
quarter, its hour and one day rollup per phase, keyed events naming their group."""

from __future__ import annotations

from contract.buckets import day_tokens, quarter_token
from contract.cells import Cell
from contract.hours import hour_token
from contract.schema import Kind
from projector.fold.deltas import CellDelta, Deltas, HourDelta, Keyed
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
    cells, axis_hours, args = apply_payload(7, 1, PHASES, deltas, max_values=50)
    assert axis_hours == []
    count = len(cells)
    tokens = [str(t) for t in args[:count]]
    assert len(set(tokens)) == count
    assert cells == [Cell(7, 1, t) for t in tokens]
    assert args[count : count + 3] == [50, 0, 0]  # the bound; no value to admit, no axis to record
    rest = args[count + 3 :]
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
    cells, axis_hours, args = apply_payload(1, 0, PHASES, Deltas(last_seq=9), max_values=50)
    assert (cells, axis_hours, args) == ([], [], [50, 0, 0, 0, ""])


def test_axes_get_cells_of_their_hour_new_values_are_offered_in_stream_order_with_their_other() -> None:
    delta = HourDelta.of({"ann"}, 1, 0)
    delta.axes["campaign=b"] = CellDelta({"ann"}, 1, 0)
    delta.axes["campaign=a"] = CellDelta()  # a keyed event's axis: named, nothing unkeyed in it
    delta.axes["site=(none)"] = CellDelta({"ann"}, 1, 0)
    keyed = [Keyed("k", "dan", 5, HOUR, Kind.CLICK, 0, ("campaign=a", "site=(none)"))]
    cells, axis_hours, args = apply_payload(7, 1, PHASES, Deltas({HOUR: delta}, keyed, 3), 50)
    assert axis_hours == [HOUR]
    axis_cells = {c.axis: i for i, c in enumerate(cells, start=1) if c.axis}
    assert set(axis_cells) == {"campaign=a", "campaign=b", "campaign=(other)", "site=(none)"}
    assert all(c.token == hour_token(HOUR) for c in cells if c.axis)
    at = len(cells)
    other = axis_cells["campaign=(other)"]
    assert args[at : at + 2] == [50, 2]
    assert args[at + 2 : at + 14] == [
        *(1, "campaign", "campaign=b", axis_cells["campaign=b"], other, "campaign=(other)"),
        *(1, "campaign", "campaign=a", axis_cells["campaign=a"], other, "campaign=(other)"),
    ]
    assert args[at + 14 : at + 17] == [1, 1, "site=(none)"]
    # The keyed event counts in its quarter-hour's group and in its two axes' groups.
    groups = [str(g) for g in str(args[-1]).split("\x1f")[1].split(",")]
    assert len(groups) == 3


def test_a_plain_hours_none_cell_rides_in_its_quarter_groups_and_its_users_are_sent_once() -> None:
    delta = HourDelta.of({"ann", "bob"}, 1, 1)
    delta.axes["(none)"], delta.plain = CellDelta(), True  # no event of the hour carries a dimension
    keyed = [Keyed("k", "dan", 5, HOUR, Kind.CLICK, 2, ("(none)",))]
    cells, axis_hours, args = apply_payload(7, 1, PHASES, Deltas({HOUR: delta}, keyed, 3), 50)
    none = next(i for i, c in enumerate(cells, start=1) if c.axis == "(none)")
    assert axis_hours == [HOUR]
    at = len(cells)
    assert args[at : at + 5] == [50, 0, 1, 1, "(none)"]  # nothing to admit; (none) recorded
    rest = args[at + 5 :]
    assert rest[0] == 2  # quarter 0 (unkeyed) and quarter 2 (keyed only): no group of (none) alone
    for g in range(2):
        assert str(none) in str(rest[1 + 4 * g]).split(",")
    assert str(rest[-1]).split("\x1f")[1] == "2"  # the keyed event's quarter group, which holds (none)
