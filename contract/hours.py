"""Hour bucketing, subject names and partitioning: where an event belongs, in the log and in Redis."""

from __future__ import annotations

import time
import zlib
from datetime import UTC, datetime, timedelta
from functools import lru_cache

HOUR_MS = 3_600_000
MAX_TIMESTAMP_MS = 253_402_297_199_999
"""The largest timestamp whose hour still ends before year 10000 (datetime's limit)."""


def hour_of(timestamp_ms: int) -> int:
    """Hours since the epoch of the UTC hour that contains `timestamp_ms`."""
    return timestamp_ms // HOUR_MS


@lru_cache(maxsize=4096)
def hour_token(hour: int) -> str:
    """`YYYYMMDDHH` of an hour index: the token used in subjects and Redis keys."""
    return hour_start(hour).strftime("%Y%m%d%H")


def hour_start(hour: int) -> datetime:
    return datetime.fromtimestamp(hour * 3600, tz=UTC)


def hour_end(hour: int) -> datetime:
    return hour_start(hour) + timedelta(hours=1)


@lru_cache(maxsize=4096)
def parse_hour_token(token: str) -> int:
    """Inverse of `hour_token`; raises ValueError for anything but `YYYYMMDDHH`."""
    if len(token) != 10 or not token.isascii() or not token.isdigit():
        raise ValueError(f"hour must be YYYYMMDDHH, got {token!r}")
    moment = datetime.strptime(token, "%Y%m%d%H").replace(tzinfo=UTC)
    return int(moment.timestamp()) // 3600


def partition_of(user: str, partitions: int) -> int:
    """Stable across processes and runs (unlike `hash`), so one user always lands in one partition."""
    return zlib.crc32(user.encode()) % partitions


def subject(prefix: str, hour: int, partition: int) -> str:
    return f"{prefix}.{hour_token(hour)}.{partition}"


def stream_subjects(prefix: str) -> list[str]:
    return [f"{prefix}.>"]


def partition_filter(prefix: str, partition: int) -> str:
    """Every hour of one partition: what one projector consumer reads."""
    return f"{prefix}.*.{partition}"


def parse_subject(prefix: str, subj: str) -> tuple[int, int]:
    """(hour, partition) of a subject written by `subject`."""
    rest = subj.removeprefix(prefix + ".")
    token, _, part = rest.partition(".")
    return parse_hour_token(token), int(part)


def system_now_ms() -> int:
    """The real clock, in epoch milliseconds; logic takes a clock argument so tests can pass their own."""
    return time.time_ns() // 1_000_000


def changes_subject(stream_name: str) -> str:
    """Core NATS subject (outside the stream) on which projections announce changed hours."""
    return f"hourglass.changed.{stream_name}"
