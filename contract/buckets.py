"""The stored buckets around the hour: quarter-hours beneath it, 24-hour day rollups above it, their
tokens, and which day starts a set of time zones needs rolled up.

Every UTC offset in use today is a whole number of quarter-hours (Kolkata +5:30, Kathmandu +5:45,
St John's -3:30), so every local hour and local day is a union of whole quarter-hours: a read in any
such zone is exact from quarter-hour counters and sketches. A day rollup is the union of the 96
quarter-hours from its start, kept for each `phase` (the minute of the UTC day at which a rolled-up
zone's days start; UTC's is 0), so a long range reads one cell per day instead of 24 or more.

Tokens name the cells in Redis keys and snapshots: an hour `YYYYMMDDHH` (as before), a quarter-hour
`YYYYMMDDHHMM` (MM is 00, 15, 30 or 45), a day rollup `d` + `YYYYMMDDHHMM` of its UTC start.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from contract.hours import HOUR_MS, hour_token, parse_hour_token

QUARTER_MS = 900_000
QUARTERS_PER_HOUR = 4
DAY_MS = 86_400_000
MINUTE_MS = 60_000
DAY_PREFIX = "d"
PHASE_YEARS = (2000, 2060)
"""The years whose local midnights decide a zone's phases: a phase seen only before or after them
is not rolled up, and days in it are read from hours and quarter-hours (exact, slower)."""


def quarter_of(timestamp_ms: int) -> int:
    """Which quarter (0-3) of its UTC hour `timestamp_ms` falls in."""
    return timestamp_ms // QUARTER_MS % QUARTERS_PER_HOUR


def quarter_token(hour: int, quarter: int) -> str:
    """`YYYYMMDDHHMM` of quarter `quarter` (0-3) of `hour` (hours since the epoch)."""
    return f"{hour_token(hour)}{15 * quarter:02d}"


def parse_quarter_token(token: str) -> tuple[int, int]:
    """(hour, quarter) of a quarter token; ValueError for anything else."""
    minute = token[10:]
    if len(token) != 12 or minute not in ("00", "15", "30", "45"):
        raise ValueError(f"quarter must be YYYYMMDDHHMM with MM in 00, 15, 30, 45; got {token!r}")
    return parse_hour_token(token[:10]), int(minute) // 15


def day_token(start_ms: int) -> str:
    """`dYYYYMMDDHHMM` of the day rollup that starts at `start_ms` (a quarter-hour boundary)."""
    if start_ms % QUARTER_MS:
        raise ValueError(f"a day rollup starts on a quarter-hour, not at {start_ms}")
    return DAY_PREFIX + _minute_token(start_ms)


@lru_cache(maxsize=65536)
def _minute_token(start_ms: int) -> str:
    return datetime.fromtimestamp(start_ms / 1000, tz=UTC).strftime("%Y%m%d%H%M")


def parse_day_token(token: str) -> int:
    """The start (epoch ms) of a day rollup token; ValueError for anything else."""
    if len(token) != 13 or not token.startswith(DAY_PREFIX) or not token[1:].isdigit():
        raise ValueError(f"day rollup must be dYYYYMMDDHHMM, got {token!r}")
    moment = datetime.strptime(token[1:], "%Y%m%d%H%M").replace(tzinfo=UTC)
    start = int(moment.timestamp()) * 1000
    if start % QUARTER_MS:
        raise ValueError(f"a day rollup starts on a quarter-hour, not {token!r}")
    return start


def is_day_token(token: str) -> bool:
    return token.startswith(DAY_PREFIX)


def owning_hour(token: str) -> int | None:
    """The hour whose snapshot entry holds the cell (an hour holds its quarters); None for a day
    rollup, which is never cold."""
    if is_day_token(token):
        return None
    return parse_hour_token(token[:10])


def day_start(timestamp_ms: int, phase: int) -> int:
    """Start (epoch ms) of the day rollup of `phase` (minute of the UTC day) that holds `timestamp_ms`."""
    offset = phase * MINUTE_MS
    return (timestamp_ms - offset) // DAY_MS * DAY_MS + offset


def day_tokens(hour: int, quarter: int, phases: Iterable[int]) -> list[str]:
    """The day rollups (one per phase) that quarter `quarter` of `hour` belongs to."""
    at = hour * HOUR_MS + quarter * QUARTER_MS
    return [day_token(day_start(at, phase)) for phase in phases]


def zone(name: str) -> ZoneInfo:
    """The IANA zone `name`; ValueError naming it when there is no such zone."""
    try:
        if not name or name != name.strip() or name.startswith("/") or ".." in name:
            raise ValueError
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ValueError(f"{name[:60]!r} is not an IANA time zone (for example Asia/Kolkata)") from None


@lru_cache(maxsize=64)
def zone_phases(name: str) -> frozenset[int]:
    """The minutes of the UTC day at which `name`'s local days start in PHASE_YEARS (a zone with
    daylight saving time has two), keeping those on a quarter-hour."""
    tz = zone(name)
    found: set[int] = set()
    day = date(PHASE_YEARS[0], 1, 1)
    last = date(PHASE_YEARS[1], 12, 31)
    one = timedelta(days=1)
    while day <= last:
        start = datetime.combine(day, time(0), tzinfo=tz).astimezone(UTC)
        minute = start.hour * 60 + start.minute
        if start.second == 0 and minute % 15 == 0:
            found.add(minute)
        day += one
    return frozenset(found)


def day_phases(zone_names: Iterable[str]) -> tuple[int, ...]:
    """Every phase the zones need rolled up, UTC's (0) always among them, in order."""
    phases = {0}
    for name in zone_names:
        phases |= zone_phases(name)
    return tuple(sorted(phases))


def phases_text(phases: Iterable[int]) -> str:
    """How a generation records its phases in Redis: `0,1095,1110`."""
    return ",".join(str(p) for p in sorted(phases))


def split_hours(phases: Iterable[int]) -> frozenset[int]:
    """The hours of the UTC day (0-23) that a phase's day starts inside of (18 for Asia/Kolkata's
    18:30): their breakdowns are kept per quarter-hour too, so those local days can be read exactly."""
    return frozenset(phase // 60 for phase in phases if phase % 60)


def parse_phases(raw: bytes | str | None) -> tuple[int, ...]:
    """Inverse of `phases_text`; a generation that recorded none has no day rollups."""
    if not raw:
        return ()
    text = raw.decode() if isinstance(raw, bytes) else raw
    return tuple(int(p) for p in text.split(","))


@lru_cache(maxsize=8192)
def _date_text(day: int) -> str:
    return (_NAIVE_EPOCH + timedelta(days=day)).strftime("%Y%m%d")


_NAIVE_EPOCH = datetime(1970, 1, 1)  # noqa: DTZ001 - UTC dates, formatted only
_HOUR_TEXTS = [f"{h:02d}" for h in range(24)]


def cell_token(start_ms: int, length_ms: int) -> str:
    """The token of the cell of `length_ms` (DAY_MS, HOUR_MS or QUARTER_MS) starting at `start_ms`, from
    cached date texts: a year by hour names its 8,760 cells in milliseconds."""
    day, in_day = divmod(start_ms, DAY_MS)
    if length_ms == HOUR_MS:
        return _date_text(day) + _HOUR_TEXTS[in_day // HOUR_MS]
    hour, minute = divmod(in_day // MINUTE_MS, 60)
    text = f"{_date_text(day)}{hour:02d}{minute:02d}"
    return DAY_PREFIX + text if length_ms == DAY_MS else text


def cover(start_ms: int, end_ms: int, phases: Iterable[int] = ()) -> list[str]:
    """The fewest stored cells, in order, whose union is exactly [start_ms, end_ms) (both on quarter-hours):
    a day rollup where one of `phases` starts a whole day inside, else whole hours, else quarter-hours."""
    if end_ms - start_ms == HOUR_MS and start_ms % HOUR_MS == 0:  # the common row: one UTC hour
        return [cell_token(start_ms, HOUR_MS)]
    if start_ms % QUARTER_MS or end_ms % QUARTER_MS:
        raise ValueError(f"[{start_ms}, {end_ms}) does not start and end on quarter-hours")
    starts = {phase * MINUTE_MS for phase in phases}
    cells: list[str] = []
    at = start_ms
    while at < end_ms:
        if at % DAY_MS in starts and at + DAY_MS <= end_ms:
            length = DAY_MS
        elif at % HOUR_MS == 0 and at + HOUR_MS <= end_ms:
            length = HOUR_MS
        else:
            length = QUARTER_MS
        cells.append(cell_token(at, length))
        at += length
    return cells


def day_components(token: str) -> list[str]:
    """The hours and quarter-hours a day rollup is the union of (what rebuilds or audits it)."""
    start = parse_day_token(token)
    return cover(start, start + DAY_MS)
