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
    assert rest[1 + 4 * groups :] == [
        50,
        0,
        "5\x1f3\x1f\x1fc\x1fdan\x1fk\x1e6\x1f1\x1f\x1fi\x1fann\x1fk2\x1e",
    ]


def test_nothing_to_apply_names_no_cell() -> None:
    cells, axis_hours, args = apply_payload(1, 0, PHASES, Deltas(last_seq=9), max_values=50)
    assert (cells, axis_hours, args) == ([], [], [0, 50, 0, ""])


def entries(text: str | int) -> list[list[str]]:
    """An hour's axes as the script reads them: axis, clicks, impressions, users, groups."""
    return [entry.split("\x1f") for entry in str(text).split("\x1e") if entry]


def test_an_hours_axes_go_in_one_string_in_stream_order_and_keyed_events_name_them_by_number() -> None:
    delta = HourDelta.of({"ann"}, 1, 0)
    delta.axes["campaign=b"] = CellDelta({"ann"}, 1, 0)
    delta.axes["campaign=a"] = CellDelta()  # a keyed event's axis: named, nothing unkeyed in it
    delta.axes["site=(none)"] = CellDelta({"ann"}, 1, 0)
    keyed = [Keyed("k", "dan", 5, HOUR, Kind.CLICK, 0, ("campaign=a", "site=(none)"))]
    cells, axis_hours, args = apply_payload(7, 1, PHASES, Deltas({HOUR: delta}, keyed, 3), 50)
    assert axis_hours == [hour_token(HOUR)]
    assert all(c.token != hour_token(HOUR) or c == Cell(7, 1, hour_token(HOUR)) for c in cells)
    at = len(cells) + 1 + 4 * int(args[len(cells)])
    assert args[at : at + 3] == [50, 1, hour_token(HOUR)]
    assert entries(args[at + 3]) == [
        ["campaign=b", "1", "0", "ann", ""],
        ["campaign=a", "0", "0", "", ""],
        ["site=(none)", "1", "0", "ann", ""],
    ]
    # The keyed event counts in its quarter-hour's group and in axes 2 and 3.
    assert str(args[-1]).split("\x1f")[1:3] == ["1", "2,3"]


def test_a_plain_hours_none_axis_takes_its_quarter_groups_so_its_users_are_sent_once() -> None:
    delta = HourDelta.of({"ann", "bob"}, 1, 1)
    delta.merge(HourDelta.of({"cid"}, 1, 0, quarter=2))
    delta.axes["(none)"], delta.plain = CellDelta(), True  # no event of the hour carries a dimension
    keyed = [Keyed("k", "dan", 5, HOUR, Kind.CLICK, 3, ("(none)",))]
    cells, axis_hours, args = apply_payload(7, 1, PHASES, Deltas({HOUR: delta}, keyed, 3), 50)
    assert axis_hours == [hour_token(HOUR)]
    groups = int(args[len(cells)])
    assert groups == 3  # quarters 0 and 2 (unkeyed), then quarter 3 (keyed only)
    at = len(cells) + 1 + 4 * groups
    assert entries(args[at + 3]) == [["(none)", "0", "0", "", "1,2"]]
    assert str(args[-1]).split("\x1f")[1:3] == ["3", "1"]


def test_keyed_events_of_an_hour_outside_the_deltas_name_axes_of_their_own() -> None:
    """A single-hour rebuild keeps its hour's deltas alone; other hours' keyed events still lend keys."""
    keyed = [Keyed("k", "dan", 5, HOUR + 1, Kind.CLICK, 0, ("campaign=a", "site=(none)"))]
    cells, axis_hours, args = apply_payload(
        7, 1, PHASES, Deltas({HOUR: HourDelta.of({"ann"}, 1, 0)}, keyed, 3)
    )
    assert axis_hours == [hour_token(HOUR + 1)]
    at = len(cells) + 1 + 4 * int(args[len(cells)])
    assert entries(args[at + 3]) == [["campaign=a", "0", "0", "", ""], ["site=(none)", "0", "0", "", ""]]
    assert str(args[-1]).split("\x1f")[2] == "1,2"
