"""The slot run that moves with a partition: its own slot, no other partition's, within its owner's range."""

from __future__ import annotations

import itertools

import pytest

from contract.slots import SLOTS, partition_slot, slot_ranges
from deploy.valkey_cluster import partition_range


@pytest.mark.parametrize(("partitions", "primaries"), [(4, 3), (12, 3), (12, 4), (16, 5)])
def test_a_partitions_run_holds_its_slot_and_no_other_partitions(partitions: int, primaries: int) -> None:
    ranges = slot_ranges(partitions, primaries)
    slots = {p: partition_slot(p) for p in range(partitions)}
    for p, slot in slots.items():
        owned = tuple(r for r in ranges if r[0] <= slot <= r[1])
        low, high = partition_range(p, partitions, owned)
        assert low <= slot <= high
        assert owned[0][0] <= low <= high <= owned[0][1]
        assert [q for q, s in slots.items() if low <= s <= high] == [p]


def test_the_runs_of_a_primarys_partitions_tile_its_range() -> None:
    """Moved one by one, a primary's partitions carry its whole range along, no slot left behind."""
    partitions = 12
    for low, high in slot_ranges(partitions, 3):
        owned = ((low, high),)
        mine = [p for p in range(partitions) if low <= partition_slot(p) <= high]
        runs = sorted(partition_range(p, partitions, owned) for p in mine)
        assert runs[0][0] == low
        assert runs[-1][1] == high
        assert all(a[1] + 1 == b[0] for a, b in itertools.pairwise(runs))
    assert slot_ranges(partitions, 3)[-1][1] == SLOTS - 1
