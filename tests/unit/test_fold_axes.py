"""The fold with dimensions (pure): summed over a dimension's values, the axis cells give the totals the
fold gave without them, and folding a run in two parts and merging equals folding it whole."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from contract import schema
from contract.cells import NONE, value_of
from contract.hours import HOUR_MS, subject
from contract.schema import Event, Kind, batch_of
from projector.fold.deltas import Deltas
from projector.fold.digest import digest

HOUR = 490_000
PREFIX = "analytics"
DECLARED = ("campaign", "site")
PAIRS = (("campaign", "site"),)

dims = st.sampled_from(
    [
        (),
        (("campaign", "spring"),),
        (("campaign", "autumn"), ("site", "x.com")),
        (("site", "b"),),
        (("other", "v"),),  # not declared here: as if it carried none
    ]
)
events = st.builds(
    Event,
    ts=st.integers(HOUR * HOUR_MS, (HOUR + 2) * HOUR_MS - 1),
    user=st.sampled_from(["a", "b", "c", "d"]),
    kind=st.sampled_from(Kind),
    key=st.none() | st.sampled_from(["k1", "k2"]),
    dims=dims,
)
runs = st.lists(st.lists(events, min_size=1, max_size=6), max_size=8)


def folded(
    run: list[list[Event]], dimensions: tuple[str, ...] = DECLARED, start: int = 0, split: bool = False
) -> Deltas:
    messages = [sorted(batch, key=lambda e: e.ts) for batch in run]
    subjects = [subject(PREFIX, batch[0].ts // HOUR_MS, 0) for batch in messages]
    payloads = [
        schema.encode(batch_of(tuple(e for e in b if e.ts // HOUR_MS == b[0].ts // HOUR_MS)))
        for b in messages
    ]
    seqs = list(range(start + 1, start + len(run) + 1))
    pairs = PAIRS if dimensions else ()
    hours = frozenset({HOUR % 24, (HOUR + 1) % 24}) if split else frozenset()
    return digest(
        subjects,
        payloads,
        seqs,
        seqs,
        prefix=PREFIX,
        partitions=1,
        dimensions=dimensions,
        pairs=pairs,
        split=hours,
    ).deltas


@given(runs)
def test_a_dimensions_values_and_none_sum_to_the_totals_without_dimensions(run: list[list[Event]]) -> None:
    plain, with_axes = folded(run, ()), folded(run)
    assert plain.keyed == [k._replace(axes=()) for k in with_axes.keyed]
    for hour, delta in with_axes.hours.items():
        bare = plain.hours[hour]
        assert [(q.users, q.clicks, q.impressions) for q in delta.quarters] == [
            (q.users, q.clicks, q.impressions) for q in bare.quarters
        ]
        axes = delta.axis_cells()
        dimensionless = axes.get(NONE)
        for name in DECLARED:
            cells = [c for axis, c in axes.items() if axis.startswith(f"{name}=")]
            if dimensionless is not None:
                cells.append(dimensionless)
            assert sum(c.clicks for c in cells) == bare.clicks
            assert sum(c.impressions for c in cells) == bare.impressions
            assert set().union(*(c.users for c in cells)) == bare.users


@given(runs, st.integers(0, 8))
def test_folding_in_two_parts_and_merging_equals_folding_whole(run: list[list[Event]], cut: int) -> None:
    whole = folded(run)
    first, second = folded(run[:cut]), folded(run[cut:], start=min(cut, len(run)))
    for hour, delta in second.hours.items():
        first.hour(hour).merge(delta)
    for hour, delta in whole.hours.items():
        merged = first.hours[hour]
        assert list(merged.axes) == list(delta.axes)  # the order new values claim cells in
        assert merged.plain == delta.plain
        assert {a: (c.users, c.clicks, c.impressions) for a, c in merged.axis_cells().items()} == {
            a: (c.users, c.clicks, c.impressions) for a, c in delta.axis_cells().items()
        }
    assert first.keyed + second.keyed == whole.keyed


def test_a_keyed_event_names_its_axes_and_adds_nothing_to_them_itself() -> None:
    keyed = Event(HOUR * HOUR_MS, "ann", Kind.CLICK, "k", (("campaign", "spring"),))
    deltas = folded([[keyed]])
    assert deltas.keyed[0].axes == ("campaign=spring", "site=(none)", "campaign+site=spring+(none)")
    axes = deltas.hours[HOUR].axes
    assert list(axes) == ["campaign=spring", "site=(none)", "campaign+site=spring+(none)"]
    assert all((c.users, c.clicks, c.impressions) == (set(), 0, 0) for c in axes.values())


@given(runs)
def test_a_pairs_cells_of_one_first_value_sum_to_that_values_own_cell(run: list[list[Event]]) -> None:
    for delta in folded(run).hours.values():
        axes = delta.axis_cells()
        pairs = {axis for axis in axes if axis.startswith("campaign+site=")}
        for axis, cell in axes.items():
            value = value_of(axis)
            if not axis.startswith("campaign=") or value == NONE:
                continue
            mine = [axes[a] for a in pairs if a.startswith(f"campaign+site={value}+")]
            assert sum(c.clicks for c in mine) == cell.clicks
            assert sum(c.impressions for c in mine) == cell.impressions
            assert set().union(*(c.users for c in mine)) == cell.users
            pairs -= {a for a in pairs if a.startswith(f"campaign+site={value}+")}
        assert pairs == set()  # none for events without a campaign


@given(runs, st.integers(0, 8))
def test_a_split_hours_quarter_axes_add_up_to_its_axes_whole_or_merged_in_two_parts(
    run: list[list[Event]], cut: int
) -> None:
    """What a Kolkata day reads at its edges: each quarter-hour's axis cells, which together are the
    hour's, however the run was cut into fetches (plain and dimensioned parts merged)."""
    whole = folded(run, split=True)
    merged = folded(run[:cut], split=True)
    for hour, delta in folded(run[cut:], start=min(cut, len(run)), split=True).hours.items():
        merged.hour(hour).merge(delta)
    for deltas in (whole, merged):
        for delta in deltas.hours.values():
            quarters = delta.quarter_axis_cells()
            assert len(quarters) == 4
            for axis, cell in delta.axis_cells().items():
                parts = [q[axis] for q in quarters if axis in q]
                assert sum(c.clicks for c in parts) == cell.clicks
                assert sum(c.impressions for c in parts) == cell.impressions
                assert set().union(*(c.users for c in parts)) == cell.users
