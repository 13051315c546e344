"""`./just bench-ranges` plans what it says: ranges ending at each zone's last midnight, three events in
each seeded hour, and a miscounted total caught rather than timed."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from contract.hours import HOUR_MS
from tests.bench.ranges import RANGES, ZONES, Read, Timings, check, reads, report_reads, seed_events

NOW = int(datetime(2026, 11, 30, 3, 20, tzinfo=UTC).timestamp() * 1000)


def test_every_zone_reads_every_range_from_and_to_its_local_midnights() -> None:
    planned = reads(NOW)
    assert len(planned) == len(ZONES) * len(RANGES)
    kolkata = {r.name: r for r in planned if r.zone == "Asia/Kolkata"}
    # 03:20 UTC is 08:50 in Kolkata: its last midnight was 18:30 UTC the day before.
    assert kolkata["24 h by hour"].end_ms == int(
        datetime(2026, 11, 29, 18, 30, tzinfo=UTC).timestamp() * 1000
    )
    assert kolkata["a year by day"].end_ms - kolkata["a year by day"].start_ms == 365 * 24 * HOUR_MS
    kathmandu = next(r for r in planned if r.zone == "Asia/Kathmandu")
    assert kathmandu.path().endswith("&tz=Asia/Kathmandu")
    assert "tz=" not in next(r for r in planned if r.zone == "UTC").path()


def test_three_events_in_every_hour_none_after_now() -> None:
    events = seed_events(NOW, 2)
    hours = {ts // HOUR_MS for ts, _, _ in events}
    assert len(events) == 3 * len(hours) == 3 * (4 * 24 + 1)
    assert max(ts for ts, _, _ in events) <= NOW
    assert sum(kind == "click" for _, _, kind in events) == len(hours)


def test_a_total_that_does_not_match_the_seeded_events_stops_the_bench() -> None:
    read = Read("Asia/Kolkata", "24 h by hour", 1, "hour", 0, 2 * HOUR_MS)
    stamps = [1, HOUR_MS + 5, 2 * HOUR_MS]
    body = "hour,unique_users,clicks,impressions\n1970-01-01T05:30:00+05:30,1,1,0\ntotal,2,1,1\n"
    assert check(read, body, stamps) is True
    with pytest.raises(AssertionError, match="3 events counted, 2 seeded"):
        check(read, body.replace("total,2,1,1", "total,2,1,2"), stamps)
    ignored = body.replace("+05:30", "Z")  # a server without tz= rounds to UTC: not checked, reported
    assert check(read, ignored.replace("total,2,1,1", "total,2,1,2"), stamps) is False


def test_the_report_gives_the_issue_ratios_and_flags_failed_reads(capsys: pytest.CaptureFixture[str]) -> None:
    planned = reads(NOW)
    timings = Timings()
    speed = {"24 h by hour": 1.0, "30 days by hour": 10.0, "30 days by day": 1.0}
    speed |= {"a year by day": 5.0, "a year by hour": 100.0}
    for read in planned:
        timings.ms["head", read] = [speed[read.name]] * 3
        timings.honoured[read] = True
        if read.zone == "UTC":
            timings.ms["base", read] = [speed[read.name] * 20] * 3
    kathmandu = next(r for r in planned if r.zone == "Asia/Kathmandu" and r.name == "a year by hour")
    timings.failed["head", kathmandu] = [503]
    report_reads(timings, planned, "ed692a1")
    out = capsys.readouterr().out
    assert "| a year by hour | 100.0 ms | 100.0 ms | 100.0 ms (1 x 503) | 2000.0 ms |" in out
    assert "Asia/Kolkata    year by day / 30 days by hour =  0.50 (ok <= 1)" in out
    assert "year by hour / 30 days by hour = 10.00 (ok <= 12)  [some reads failed" in out
    assert "UTC, base       year by day / 30 days by hour =  0.50 (ok <= 1)" in out
