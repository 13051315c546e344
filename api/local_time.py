"""The local hours or days of an IANA zone that a range read asks for, pure: each as its UTC interval and
its label, planned from the zone's offset changes (found by sampling once a day and bisecting where the
offset differs) with plain arithmetic in between, so a year by hour costs a few hundred zone lookups.

A local hour is the run of instants with the same local wall-clock hour and the same UTC offset (at a
fall-back the repeated hour is two rows); a local day is the run with the same local date (23 or 25 h
around a DST change). A row is labelled with its first instant in local ISO-8601 with its offset.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

from contract.buckets import DAY_MS, QUARTER_MS
from contract.hours import HOUR_MS
from server.failures import ParamError

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_NAIVE_EPOCH = datetime(1970, 1, 1)  # noqa: DTZ001 - local wall-clock arithmetic, labelled with its offset
_ONE_MS = timedelta(milliseconds=1)
_MARGIN_MS = 2 * DAY_MS
"""Longer than any local day, so planning from this far before `from` finds the start of its row."""

Row = tuple[int, int, int]
"""[start, end) in ms since the epoch, and the UTC offset (ms) at the start."""


def offset_ms(tz: ZoneInfo, at_ms: int) -> int:
    """The zone's UTC offset at the instant (ms)."""
    try:
        offset = (_EPOCH + timedelta(milliseconds=at_ms)).astimezone(tz).utcoffset()
    except OverflowError:
        raise ParamError("to", "a range in a local time zone must lie within years 1 to 9999") from None
    return 0 if offset is None else offset // _ONE_MS


def _transition(tz: ZoneInfo, lo: int, hi: int, before: int) -> int:
    """The first instant in (lo, hi] whose offset is not `before` (the offset at lo; hi's differs)."""
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if offset_ms(tz, mid) == before:
            lo = mid
        else:
            hi = mid
    return hi


def _grid(after: int, upto: int, offset: int, step: int) -> range:
    """Instants in (after, upto) where local time (at `offset`) is a whole multiple of `step`."""
    first = after + (-(after + offset)) % step
    if first == after:
        first += step
    return range(first, upto, step)


def _key(at: int, offset: int, step: int) -> tuple[int, int]:
    """Which row an instant falls in: its local hour and offset, or its local day."""
    return ((at + offset) // step, offset if step == HOUR_MS else 0)


def boundaries(tz: ZoneInfo, after: int, step: int) -> Iterator[tuple[int, int]]:
    """Every instant after `after` at which a new local hour (step HOUR_MS) or day (DAY_MS) begins,
    with the offset from then on, in order and without end."""
    at, offset = after, offset_ms(tz, after)
    while True:
        sample = at + DAY_MS
        later = offset_ms(tz, sample)
        if later == offset:
            for b in _grid(at, sample + 1, offset, step):
                yield b, offset
            at = sample
            continue
        change = _transition(tz, at, sample, offset)
        new = offset_ms(tz, change)
        for b in _grid(at, change, offset, step):
            yield b, offset
        if _key(change - 1, offset, step) != _key(change, new, step):
            yield change, new
        at, offset = change, new


def local_rows(name: str, tz: ZoneInfo, start_ms: int, end_ms: int, step: int, most: int) -> list[Row]:
    """The local rows (hours or days) from the one holding `start_ms` to the last starting before
    `end_ms`, each with the offset at its start. ParamError naming `to` past `most` rows, naming `tz`
    where a row would not start on a UTC quarter-hour (offsets such as local mean time)."""
    rows: list[Row] = []
    prev: tuple[int, int] | None = None
    for at, offset in boundaries(tz, start_ms - _MARGIN_MS, step):
        if at > start_ms and prev is not None:
            if prev[0] >= end_ms:
                return rows
            for edge in (prev[0], at):
                if edge % QUARTER_MS:
                    raise ParamError("tz", _unaligned(name, edge))
            rows.append((prev[0], at, prev[1]))
            if len(rows) > most:
                unit = "hour" if step == HOUR_MS else "day"
                raise ParamError(
                    "to",
                    f"the range holds more than {most} {unit}s; at most {most} "
                    "(ANALYTICS_RANGE_MAX_BUCKETS) fit in one read",
                )
        prev = (at, offset)
    raise AssertionError("unreachable: boundaries never ends")


def _unaligned(name: str, at: int) -> str:
    when = datetime.fromtimestamp(at // 1000, UTC).date().isoformat()
    return (
        f"{name[:60]!r} has a UTC offset around {when} that is not a whole number of quarter-hours: "
        "ranges there cannot be read in this zone"
    )


def labels(rows: list[Row]) -> list[str]:
    """Each row's first instant in local ISO-8601 with its offset: `2026-11-25T00:00:00+05:30`."""
    out = []
    for start, _, offset in rows:
        day, in_day = divmod(start + offset, DAY_MS)
        out.append(_date_text(day) + _time_text(in_day) + _offset_text(offset))
    return out


def utc_labels(spans: Iterable[tuple[int, int]], days: bool) -> list[str]:
    """The labels ranges in UTC have always had: `2026-05-06T14:00:00Z`, or the date for days."""
    if days:
        return [_date_text(start // DAY_MS) for start, _ in spans]
    return [_date_text(start // DAY_MS) + _time_text(start % DAY_MS) + "Z" for start, _ in spans]


@lru_cache(maxsize=1024)
def _time_text(in_day_ms: int) -> str:
    seconds = in_day_ms // 1000
    return f"T{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


@lru_cache(maxsize=4096)
def _date_text(day: int) -> str:
    return (_NAIVE_EPOCH + timedelta(days=day)).date().isoformat()


@lru_cache(maxsize=256)
def _offset_text(offset: int) -> str:
    sign = "-" if offset < 0 else "+"
    minutes, seconds = divmod(abs(offset) // 1000, 60)
    text = f"{sign}{minutes // 60:02d}:{minutes % 60:02d}"
    return text + (f":{seconds:02d}" if seconds else "")
