"""What a GET asks for (one hour or a range), pure: which buckets `from`/`to` name in which zone, how each
is labelled, and how a range's rows are rendered."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property

import msgspec

from api.breakdown import MAX_HOURS, Filter, Filtered, axis_cells, parse_filter
from api.local_time import labels, local_rows, utc_labels
from contract.buckets import zone
from contract.hours import HOUR_MS, hour_start
from server.failures import ParamError
from server.params import parse_query, parse_timestamp, parse_timestamp_param, single, timestamp_only


class Granularity(enum.StrEnum):
    HOUR = "hour"
    DAY = "day"


HOURS_PER = {Granularity.HOUR: 1, Granularity.DAY: 24}


UTC_NAMES = ("", "UTC")
"""`tz` values that keep the UTC labels (`2026-05-06T14:00:00Z`, days `2026-05-06`) older clients read."""


@dataclass(frozen=True)
class RangeQuery:
    granularity: Granularity
    spans: tuple[tuple[int, int], ...]
    """Each row's [start, end) in ms since the epoch, in order and back to back."""
    labels: tuple[str, ...]
    tz: str = "UTC"

    @cached_property
    def buckets(self) -> tuple[tuple[int, ...], ...]:
        """Each row's hours (hours since the epoch), for rows of whole UTC hours."""
        return tuple(tuple(range(s // HOUR_MS, -(-e // HOUR_MS))) for s, e in self.spans)


def parse_read(
    raw_query: bytes,
    max_buckets: int,
    dimensions: frozenset[str] = frozenset(),
    split: frozenset[int] = frozenset(),
) -> int | RangeQuery | FilteredRange | Filtered:
    """A GET's query: the timestamp of the hour it asks for, the range, either filtered; a
    ParamError names what is wrong. The common `timestamp=<digits>` is read without building the query
    dict."""
    timestamp = timestamp_only(raw_query)
    if timestamp is not None:
        return timestamp
    query = parse_query(raw_query)
    if "from" in query or "to" in query:
        return parse_range_read(query, max_buckets, dimensions, split)
    only = parse_filter(query, dimensions) if dimensions else None
    if only is not None:
        return Filtered(parse_timestamp(query), only)
    return parse_timestamp(query)


@dataclass(frozen=True)
class FilteredRange:
    """A range of hours or days, of the events with one dimension's value."""

    q: RangeQuery
    only: Filter
    cells: tuple[tuple[str, ...], ...]
    """Each row's cells (hours, and quarter-hours of split hours: api.breakdown.axis_cells)."""


def parse_range_read(
    query: dict[str, list[str]],
    max_buckets: int,
    dimensions: frozenset[str] = frozenset(),
    split: frozenset[int] = frozenset(),
) -> RangeQuery | FilteredRange:
    """A range, filtered when the query names a dimension (over at most MAX_HOURS hours; in a zone,
    rows whose edges fall inside UTC hours only where `split` keeps those hours per quarter-hour)."""
    q = parse_range(query, max_buckets)
    only = parse_filter(query, dimensions) if dimensions else None
    if only is None:
        return q
    if q.spans and q.spans[-1][1] - q.spans[0][0] > MAX_HOURS * HOUR_MS:
        raise ParamError("to", f"a filtered range covers at most {MAX_HOURS} hours (31 days)")
    return FilteredRange(q, only, tuple(axis_cells(q.tz, span, split) for span in q.spans))


def parse_range(query: dict[str, list[str]], max_buckets: int) -> RangeQuery:
    """`from` (rounded down to its bucket) up to `to` (exclusive): every bucket starting in between,
    none when `to` is at or before that bucket's start (an empty range, not an error: a schema cannot
    relate `to` to `from`, so the OpenAPI document admits it)."""
    if single(query, "timestamp") is not None:
        raise ParamError("timestamp", "give either timestamp, or from and to, not both")
    start_ms = parse_timestamp_param(query, "from")
    end_ms = parse_timestamp_param(query, "to")
    raw = single(query, "granularity") or "hour"
    try:
        granularity = Granularity(raw)
    except ValueError:
        raise ParamError("granularity", f"must be 'hour' or 'day', got {raw[:20]!r}") from None
    name = single(query, "tz") or "UTC"
    if name in UTC_NAMES:
        return _utc_range(granularity, start_ms, end_ms, max_buckets)
    try:
        tz = zone(name)
    except ValueError as exc:
        raise ParamError("tz", str(exc)) from None
    step = HOURS_PER[granularity] * HOUR_MS
    if (end_ms - start_ms) // (2 * step) > max_buckets:  # no local hour or day is twice its length
        raise ParamError(
            "to",
            f"the range holds more than {max_buckets} {granularity.value}s; at most {max_buckets} "
            "(ANALYTICS_RANGE_MAX_BUCKETS) fit in one read",
        )
    rows = local_rows(name, tz, start_ms, end_ms, step, max_buckets)
    return RangeQuery(granularity, tuple((s, e) for s, e, _ in rows), tuple(labels(rows)), name)


def _utc_range(granularity: Granularity, start_ms: int, end_ms: int, max_buckets: int) -> RangeQuery:
    step = HOURS_PER[granularity]
    first = start_ms // HOUR_MS // step * step
    # Buckets whose start is before `to`: none when `to` is at or before `from`'s bucket.
    count = max(0, -(-(end_ms - first * HOUR_MS) // (step * HOUR_MS)))
    if count > max_buckets:
        raise ParamError(
            "to",
            f"the range holds {count} {granularity.value}s; at most {max_buckets} "
            "(ANALYTICS_RANGE_MAX_BUCKETS) fit in one read",
        )
    spans = tuple(((first + i * step) * HOUR_MS, (first + (i + 1) * step) * HOUR_MS) for i in range(count))
    return RangeQuery(granularity, spans, tuple(utc_labels(spans, granularity is Granularity.DAY)))


def label(granularity: Granularity, first_hour: int) -> str:
    start = hour_start(first_hour)
    if granularity is Granularity.DAY:
        return start.date().isoformat()
    return _iso(start)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


Row = tuple[int, int, int]
"""(unique users, clicks, impressions)"""


def render_csv(q: RangeQuery, rows: list[Row], total: Row) -> bytes:
    lines = [f"{q.granularity.value},unique_users,clicks,impressions"]
    lines += [f"{text},{u},{c},{i}" for text, (u, c, i) in zip(q.labels, rows, strict=True)]
    lines.append(f"total,{total[0]},{total[1]},{total[2]}")
    return ("\n".join(lines) + "\n").encode()


class BucketJSON(msgspec.Struct, frozen=True):
    start: str
    unique_users: int
    clicks: int
    impressions: int


class TotalJSON(msgspec.Struct, frozen=True):
    unique_users: int
    clicks: int
    impressions: int


class RangeJSON(msgspec.Struct, frozen=True):
    granularity: str
    buckets: list[BucketJSON]
    total: TotalJSON


def render_json(q: RangeQuery, rows: list[Row], total: Row) -> bytes:
    body = RangeJSON(
        granularity=q.granularity.value,
        buckets=[BucketJSON(text, *row) for text, row in zip(q.labels, rows, strict=True)],
        total=TotalJSON(*total),
    )
    return msgspec.json.encode(body)
