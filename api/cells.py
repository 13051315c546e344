"""Which stored cells a range read reads, pure: each row's cover (contract.buckets.cover), the
range's own cover for its `total`, and every distinct cell once, rows and total naming them by index."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from contract.buckets import cell_token, cover
from contract.hours import HOUR_MS


@dataclass(frozen=True, slots=True)
class CellPlan:
    """The cells one group of partitions (those with the same phases) reads for a range."""

    cells: list[str]
    """Distinct cell tokens."""
    rows: list[list[int]]
    """Each row's cells, as indices into `cells`."""
    total: list[int]
    """The range's cells (fewest, day rollups where they fit), as indices into `cells`."""


def plan(rows: Sequence[Sequence[tuple[int, int]]], phases: Sequence[int]) -> CellPlan:
    """The cells of each row (a row is one or more spans; rows do not overlap) and of all rows."""
    hourly = _hourly(rows)  # the long common case, built without a cover per row
    cells: list[str] = hourly if hourly is not None else []
    index = {token: i for i, token in enumerate(cells)}

    def indices(spans: Iterable[tuple[int, int]]) -> list[int]:
        found = []
        for start, end in spans:
            for token in cover(start, end, phases):
                i = index.get(token)
                if i is None:
                    i = index[token] = len(cells)
                    cells.append(token)
                found.append(i)
        return found

    if hourly is not None:
        each = [[i] for i in range(len(hourly))]
        return CellPlan(cells, each, indices(joined(rows)))
    return CellPlan(cells, [indices(row) for row in rows], indices(joined(rows)))


def _hourly(rows: Sequence[Sequence[tuple[int, int]]]) -> list[str] | None:
    """The hour tokens of rows that are each one whole UTC hour, back to back; None for any others."""
    first = rows[0][0][0] if rows and rows[0] else 1
    if first % HOUR_MS or any(
        len(row) != 1 or row[0] != (first + i * HOUR_MS, first + (i + 1) * HOUR_MS)
        for i, row in enumerate(rows)
    ):
        return None
    hours = first // HOUR_MS
    return [cell_token(h * HOUR_MS, HOUR_MS) for h in range(hours, hours + len(rows))]


def joined(rows: Sequence[Sequence[tuple[int, int]]]) -> list[tuple[int, int]]:
    """The rows' spans with touching ones joined, in order."""
    out: list[tuple[int, int]] = []
    for start, end in sorted(span for row in rows for span in row):
        if out and out[-1][1] == start:
            out[-1] = (out[-1][0], end)
        else:
            out.append((start, end))
    return out
