"""What a breakdown or a filtered read asks for, and how a breakdown's rows are chosen and rendered
(pure): GET /analytics/breakdown?by=<dimension>&(timestamp=<ms>|from=<ms>&to=<ms>)[&sort=][&top=],
and the one-hour read GET /analytics?timestamp=<ms>&<dimension>=<value>."""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

import msgspec

from contract.cells import NONE, OTHER, axis_of, pair_axis
from contract.hours import HOUR_MS
from server.failures import ParamError
from server.params import parse_dimensions, parse_timestamp, parse_timestamp_param, single

TOP_DEFAULT, TOP_MAX = 20, 1000
MAX_HOURS = 744
"""The most hours one breakdown covers (31 days): each value's users are a union over every hour."""
BREAKDOWN_PARAMS = frozenset({"by", "timestamp", "from", "to", "tz", "sort", "top"})
READ_PARAMS = frozenset({"timestamp", "from", "to", "granularity", "tz"})


class Sort(enum.StrEnum):
    UNIQUE_USERS = "unique_users"
    CLICKS = "clicks"
    IMPRESSIONS = "impressions"
    CTR = "ctr"


@dataclass(frozen=True, slots=True)
class Filter:
    """One dimension's value: the events a filtered read counts."""

    dimension: str
    value: str

    @property
    def axis(self) -> str:
        return axis_of(self.dimension, self.value)


@dataclass(frozen=True, slots=True)
class Filtered:
    """A one-hour read of the events with one dimension's value."""

    timestamp: int
    only: Filter


@dataclass(frozen=True, slots=True)
class BreakdownQuery:
    dimension: str
    hours: range
    """The UTC hours covered: the timestamp's, or those starting from `from`'s hour up to `to`."""
    sort: Sort = Sort.CLICKS
    top: int = TOP_DEFAULT
    one_hour: bool = True
    within: Filter | None = None
    """Only the events with a value of another dimension, the first of a declared pair whose second is
    `dimension` (`by=creative&campaign=x`)."""

    def axis(self, value: str) -> str:
        """The axis of one row's value (a pair's when the breakdown is `within` a value)."""
        if self.within is None:
            return axis_of(self.dimension, value)
        return pair_axis(self.within.dimension, self.dimension, self.within.value, value)


def parse_filter(query: dict[str, list[str]], dimensions: frozenset[str]) -> Filter | None:
    """The filter a read's query names, if any (one dimension at most so far)."""
    named = parse_dimensions(query, dimensions, READ_PARAMS)
    if not named:
        return None
    if len(named) > 1:
        raise ParamError(named[1][0], "filter by one dimension at a time")
    return Filter(*named[0])


def parse_breakdown(
    query: dict[str, list[str]],
    dimensions: frozenset[str],
    pairs: frozenset[tuple[str, str]] = frozenset(),
) -> BreakdownQuery:
    """`by` a declared dimension, one hour by `timestamp` or a period, `sort`, `top`, and a filter by
    the first dimension of a declared pair whose second is `by`; a ParamError names what is wrong."""
    by = single(query, "by")
    declared = ", ".join(sorted(dimensions)) or "none"
    if by is None:
        raise ParamError("by", f"is required: a declared dimension ({declared})")
    if by not in dimensions:
        raise ParamError("by", f"{by[:40]!r} is not a declared dimension ({declared})")
    if single(query, "tz") not in (None, "", "UTC"):
        raise ParamError("tz", "a breakdown's period is whole UTC hours from `from` to `to`; no zone yet")
    within = _within(by, parse_dimensions(query, dimensions, BREAKDOWN_PARAMS), pairs)
    raw_sort = single(query, "sort")
    try:
        sort = Sort.CLICKS if raw_sort is None else Sort(raw_sort)
    except ValueError:
        names = "|".join(s.value for s in Sort)
        raise ParamError("sort", f"must be one of {names}, got {(raw_sort or '')[:20]!r}") from None
    raw_top = single(query, "top")
    top = TOP_DEFAULT
    if raw_top is not None:
        if not (raw_top.isascii() and raw_top.isdigit()) or not 1 <= int(raw_top[:5]) <= TOP_MAX:
            raise ParamError("top", f"must be a whole number from 1 to {TOP_MAX}, got {raw_top[:20]!r}")
        top = int(raw_top)
    hours, one_hour = _hours(query)
    return BreakdownQuery(by, hours, sort, top, one_hour, within)


def _within(by: str, named: Sequence[tuple[str, str]], pairs: frozenset[tuple[str, str]]) -> Filter | None:
    """The filter of a breakdown: one value of a dimension declared as first of a pair with `by`."""
    if not named:
        return None
    if len(named) > 1:
        raise ParamError(named[1][0], "a breakdown takes one filter")
    name, value = named[0]
    if (name, by) not in pairs:
        declared = ", ".join(f"{a}:{b}" for a, b in sorted(pairs)) or "none"
        raise ParamError(
            name,
            f"a breakdown by {by} is filtered only by the first dimension of a declared pair with it "
            f"(ANALYTICS_DIMENSION_PAIRS: {declared})",
        )
    return Filter(name, value)


def _hours(query: dict[str, list[str]]) -> tuple[range, bool]:
    """The timestamp's hour, or every UTC hour starting from `from`'s hour and before `to` (none when
    `to` is at or before that hour's start, an empty period)."""
    if "from" not in query and "to" not in query:
        hour = parse_timestamp(query) // HOUR_MS
        return range(hour, hour + 1), True
    if single(query, "timestamp") is not None:
        raise ParamError("timestamp", "give either timestamp, or from and to, not both")
    first = parse_timestamp_param(query, "from") // HOUR_MS
    end = -(-parse_timestamp_param(query, "to") // HOUR_MS)
    if end - first > MAX_HOURS:
        raise ParamError("to", f"a breakdown covers at most {MAX_HOURS} hours (31 days), got {end - first}")
    return range(first, max(first, end)), False


Row = tuple[int, int, int]
"""(unique users, clicks, impressions)"""
Counts = tuple[int, int]
"""(clicks, impressions) of one value, summed over partitions."""


def ctr(clicks: int, impressions: int) -> float | None:
    """Clicks per impression; None without impressions."""
    return clicks / impressions if impressions else None


def chosen(q: BreakdownQuery, counts: dict[str, Counts], users: dict[str, int] | None = None) -> list[str]:
    """The values shown: the `top` by the sort (unique users need `users`), ties by value."""

    def key(value: str) -> tuple[float, str]:
        clicks, impressions = counts[value]
        if q.sort is Sort.CLICKS:
            return (-clicks, value)
        if q.sort is Sort.IMPRESSIONS:
            return (-impressions, value)
        if q.sort is Sort.CTR:
            return (-(ctr(clicks, impressions) or 0.0), value)
        return (-(users or {}).get(value, 0), value)

    return sorted(counts, key=key)[: q.top]


def value_axes(q: BreakdownQuery, values: list[str]) -> list[str]:
    """The axes read for the shown values, then (none) (unfiltered, with the events that carried no
    dimension at all) and (other)."""
    none = q.axis(NONE) if q.within else f"{q.axis(NONE)}|{NONE}"
    return [*(q.axis(v) for v in values), none, q.axis(OTHER)]


def render_csv(q: BreakdownQuery, rows: list[tuple[str, Row]], total: Row) -> bytes:
    lines = [f"{q.dimension},unique_users,clicks,impressions,ctr"]
    for name, (u, c, i) in [*rows, ("total", total)]:
        rate = ctr(c, i)
        lines.append(f"{name},{u},{c},{i},{'' if rate is None else f'{rate:.4f}'}")
    return ("\n".join(lines) + "\n").encode()


class RowJSON(msgspec.Struct, frozen=True):
    value: str
    unique_users: int
    clicks: int
    impressions: int
    ctr: float | None


class BreakdownJSON(msgspec.Struct, frozen=True):
    by: str
    sort: str
    rows: list[RowJSON]
    total: RowJSON


def render_json(q: BreakdownQuery, rows: list[tuple[str, Row]], total: Row) -> bytes:
    def row(name: str, r: Row) -> RowJSON:
        rate = ctr(r[1], r[2])
        return RowJSON(name, r[0], r[1], r[2], None if rate is None else round(rate, 6))

    body = BreakdownJSON(q.dimension, q.sort.value, [row(n, r) for n, r in rows], row("total", total))
    return msgspec.json.encode(body)
