"""Which stored cells a range read reads, pure: each row's cover (contract.buckets.cover, with tokens
made from cached date texts so a year by hour plans in milliseconds), the range's own cover for its
`total`, and every distinct cell once, rows and total naming them by index."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache

from contract.buckets import DAY_MS, DAY_PREFIX, MINUTE_MS, QUARTER_MS
from contract.hours import HOUR_MS

_NAIVE_EPOCH = datetime(1970, 1, 1)  # noqa: DTZ001 - UTC dates, formatted only


@dataclass(frozen=True, slots=True)
class CellPlan:
    """The cells one group of partitions (those with the same phases) reads for a range."""

    cells: list[str]
    """Distinct cell tokens."""
    rows: list[list[int]]
    """Each row's cells, as indices into `cells`."""
    total: list[int]
    """The range's cells (fewest, day rollups where they fit), as indices into `cells`."""


@lru_cache(maxsize=8192)
def _date(day: int) -> str:
    return (_NAIVE_EPOCH + timedelta(days=day)).strftime("%Y%m%d")


def _token(at: int, kind: int) -> str:
    """The token of the cell of `kind` (DAY_MS, HOUR_MS or QUARTER_MS) starting at `at`."""
    day, in_day = divmod(at, DAY_MS)
    hour, minute = divmod(in_day // MINUTE_MS, 60)
    if kind == HOUR_MS:
        return f"{_date(day)}{hour:02d}"
    text = f"{_date(day)}{hour:02d}{minute:02d}"
    return DAY_PREFIX + text if kind == DAY_MS else text


def cover(start_ms: int, end_ms: int, phases: Sequence[int]) -> list[str]:
    """As contract.buckets.cover: the fewest cells whose union is exactly [start_ms, end_ms)."""
    if start_ms % QUARTER_MS or end_ms % QUARTER_MS:
        raise ValueError(f"[{start_ms}, {end_ms}) does not start and end on quarter-hours")
    starts = {phase * MINUTE_MS for phase in phases}
    cells: list[str] = []
    at = start_ms
    while at < end_ms:
        if at % DAY_MS in starts and at + DAY_MS <= end_ms:
            kind = DAY_MS
        elif at % HOUR_MS == 0 and at + HOUR_MS <= end_ms:
            kind = HOUR_MS
        else:
            kind = QUARTER_MS
        cells.append(_token(at, kind))
        at += kind
    return cells


def plan(rows: Sequence[Sequence[tuple[int, int]]], phases: Sequence[int]) -> CellPlan:
    """The cells of each row (a row is one or more spans; rows do not overlap) and of all rows."""
    index: dict[str, int] = {}
    cells: list[str] = []

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

    return CellPlan(cells, [indices(row) for row in rows], indices(joined(rows)))


def joined(rows: Sequence[Sequence[tuple[int, int]]]) -> list[tuple[int, int]]:
    """The rows' spans with touching ones joined, in order."""
    out: list[tuple[int, int]] = []
    for start, end in sorted(span for row in rows for span in row):
        if out and out[-1][1] == start:
            out[-1] = (out[-1][0], end)
        else:
            out.append((start, end))
    return out
