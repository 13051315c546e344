"""What a breakdown or a filtered read asks for, and how a breakdown's rows are chosen and rendered
(pure): GET /analytics/breakdown?by=<dimension>&(timestamp=<ms>|from=<ms>&to=<ms>)[&sort=][&top=],
and the one-hour read GET /analytics?timestamp=<ms>&<dimension>=<value>."""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

import msgspec

from api.local_time import local_rows
from contract.buckets import DAY_MS, cover, parse_quarter_token, zone
from contract.cells import NONE, OTHER, axis_of, pair_axis
from contract.hours import HOUR_MS, hour_token
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
    cells: tuple[str, ...]
    """The cells covered (`axis_cells`): the timestamp's hour, the UTC hours starting from `from`'s
    hour up to `to`, or with `tz` the local days from `from`'s up to `to` (quarter-hours where a day
    starts inside an hour); none for an empty period."""
    span: tuple[int, int] | None
    """The period's [start, end) in ms (None when empty): what its `total` row reads."""
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
    split: frozenset[int] = frozenset(),
) -> BreakdownQuery:
    """`by` a declared dimension, one hour by `timestamp` or a period (in UTC hours, or with `tz` in
    local days, which `split` hours must hold where one starts inside an hour), `sort`, `top`, and a
    filter by the first dimension of a declared pair whose second is `by`; a ParamError names what is
    wrong."""
    by = single(query, "by")
    declared = ", ".join(sorted(dimensions)) or "none"
    if by is None:
        raise ParamError("by", f"is required: a declared dimension ({declared})")
    if by not in dimensions:
        raise ParamError("by", f"{by[:40]!r} is not a declared dimension ({declared})")
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
    cells, span, one_hour = _period(query, split)
    return BreakdownQuery(by, cells, span, sort, top, one_hour, within)


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


def _period(
    query: dict[str, list[str]], split: frozenset[int]
) -> tuple[tuple[str, ...], tuple[int, int] | None, bool]:
    """The cells, the span and whether it is one hour: the timestamp's hour; or every UTC hour starting
    from `from`'s hour and before `to`; or with `tz`, every local day starting from `from`'s day and
    before `to`. Empty (no cells, no span) when `to` is at or before that hour's or day's start."""
    if "from" not in query and "to" not in query:
        hour = parse_timestamp(query) // HOUR_MS
        return (hour_token(hour),), (hour * HOUR_MS, (hour + 1) * HOUR_MS), True
    if single(query, "timestamp") is not None:
        raise ParamError("timestamp", "give either timestamp, or from and to, not both")
    start, end = parse_timestamp_param(query, "from"), parse_timestamp_param(query, "to")
    name = single(query, "tz") or "UTC"
    if name == "UTC":
        first, last = start // HOUR_MS, -(-end // HOUR_MS)
        if last - first > MAX_HOURS:
            raise ParamError(
                "to", f"a breakdown covers at most {MAX_HOURS} hours (31 days), got {last - first}"
            )
        if last <= first:
            return (), None, False
        return tuple(hour_token(h) for h in range(first, last)), (first * HOUR_MS, last * HOUR_MS), False
    try:
        tz = zone(name)
    except ValueError as exc:
        raise ParamError("tz", str(exc)) from None
    too_long = ParamError("to", f"a breakdown covers at most {MAX_HOURS // 24} days")
    if end - start > (MAX_HOURS + 48) * HOUR_MS:
        raise too_long
    try:
        days = local_rows(name, tz, start, end, DAY_MS, MAX_HOURS // 24)
    except ParamError as exc:
        raise too_long if exc.param == "to" else exc from None
    if not days:
        return (), None, False
    span = (days[0][0], days[-1][1])
    return axis_cells(name, span, split), span, False


def axis_cells(name: str, span: tuple[int, int], split: frozenset[int]) -> tuple[str, ...]:
    """The cells whose axes hold [start, end): whole UTC hours, and the quarter-hours of an hour a kept
    zone's day starts inside (`split`, contract.buckets.split_hours). ParamError naming `tz` when the
    span starts or ends inside any other hour: no cells hold that part of it by value."""
    cells = cover(*span)
    for token in cells:
        if len(token) > len(hour_token(0)) and parse_quarter_token(token)[0] % 24 not in split:
            raise ParamError(
                "tz",
                f"{name[:60]!r} starts a day or hour inside a UTC hour ({token[8:10]}:{token[10:]} UTC); "
                "breakdowns are kept per quarter-hour only in the hours a zone of ANALYTICS_DAY_ZONES "
                "starts its days in: read its days, or add the zone there (and ./just replay)",
            )
    return tuple(cells)


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
