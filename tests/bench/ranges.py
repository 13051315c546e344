"""`./just bench-ranges`: long range reads in UTC and in other zones, the current-hour GET against the last
release, and Redis bytes per busy hour, in one run.

1. Own nats-server and valkey-server on free ports; this checkout's projector and HTTP server, and the
   HTTP server of `--base` (checked out with `git worktree`), with ANALYTICS_DAY_ZONES=UTC,Asia/Kolkata.
   Seeds three events in each hour of a year and a bit through POST, as a new user would, and waits
   until the projector applied them and the hours older than the hot window left Redis.
2. Times range reads (median of `--rounds` (9) rounds after one warm-up round, one keep-alive client):
   24 h by hour, 30 days by hour and by day, a year by day and by hour, each ending at the zone's last
   midnight, in UTC, Asia/Kolkata (rolled up) and Asia/Kathmandu (not rolled up: the composed path);
   the base server's UTC reads beside them. Checks each answer's total against the seeded events and
   prints the issue's ratios: year by day / 30 days by hour <= 1, year by hour / 30 days by hour <= 12.
3. `GET ?timestamp=now` with wrk against both servers, alternating rounds: medians and their ratio.
4. One busy hour (`--busy-events` of `--busy-users`) projected by the base and by this checkout, each
   on fresh servers (tests/bench/busy_hour.py): MEMORY USAGE of its cells, the factor, apply CPU.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from datetime import time as clock
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import nats
from redis import Redis as SyncRedis
from redis.asyncio import Redis

from contract.hours import HOUR_MS, hour_of, partition_of, subject, system_now_ms
from contract.schema import Event, Kind, batch_of, encode
from deploy.servers import ROOT
from deploy.settings import Settings
from projector.projections.hot_window import first_hot_hour
from tests.bench import busy_hour
from tests.bench.commits import checkout, tree_server
from tests.bench.history import caught_up, cold_count
from tests.bench.run import GET_LUA, WrkResult, ensure_wrk, process, run_wrk, wait_http
from tests.bench.servers import scratch_servers
from tests.helpers import settings_env
from tests.ports import free_port

BASE = "ed692a1"
"""The last release: main before issue 22."""
DAY_ZONES = "UTC,Asia/Kolkata"
ZONES = ("UTC", "Asia/Kolkata", "Asia/Kathmandu")
RANGES = (
    ("24 h by hour", 1, "hour"),
    ("30 days by hour", 30, "hour"),
    ("30 days by day", 30, "day"),
    ("a year by day", 365, "day"),
    ("a year by hour", 365, "hour"),
)
MINUTES = (7, 29, 52)
"""Where in each hour the three events fall: three different quarter-hours."""


@dataclass(frozen=True)
class Read:
    zone: str
    name: str
    days: int
    granularity: str
    start_ms: int
    end_ms: int

    def path(self) -> str:
        tz = "" if self.zone == "UTC" else f"&tz={self.zone}"
        return f"/analytics/range?from={self.start_ms}&to={self.end_ms}&granularity={self.granularity}{tz}"


def reads(now_ms: int) -> list[Read]:
    out = []
    for name in ZONES:
        tz = ZoneInfo(name)
        today = datetime.fromtimestamp(now_ms / 1000, tz=tz).date()
        end = datetime.combine(today, clock(0), tzinfo=tz)
        for label, days, granularity in RANGES:
            start = datetime.combine(today - timedelta(days=days), clock(0), tzinfo=tz)
            ms = (int(start.timestamp() * 1000), int(end.timestamp() * 1000))
            out.append(Read(name, label, days, granularity, *ms))
    return out


def seed_events(now_ms: int, days: int) -> list[tuple[int, str, str]]:
    """(timestamp, user, kind): three events in each hour from `days` + 2 days ago to now."""
    now_hour = hour_of(now_ms)
    out = []
    for hour in range(now_hour - (days + 2) * 24, now_hour + 1):
        for k, minute in enumerate(MINUTES):
            ts = min(hour * HOUR_MS + minute * 60_000 + k, now_ms)
            out.append((ts, f"user-{(hour * 3 + k) % 20_000}", "click" if k == 0 else "impression"))
    return out


async def post_all(url: str, events: list[tuple[int, str, str]], concurrency: int = 64) -> float:
    todo = iter(events)
    started = time.perf_counter()

    async def worker(http: httpx.AsyncClient) -> None:
        for ts, user, kind in todo:
            response = await http.post(f"/analytics?timestamp={ts}&user={user}&event={kind}")
            if response.status_code != 204:
                raise RuntimeError(f"POST answered {response.status_code}: {response.text}")

    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        await asyncio.gather(*(worker(http) for _ in range(concurrency)))
    return time.perf_counter() - started


async def publish_all(settings: Settings, events: list[tuple[int, str, str]]) -> float:
    """The same events straight to the stream, one message per hour and partition (faster than POST)."""
    started = time.perf_counter()
    groups: dict[tuple[int, int], list[Event]] = {}
    for ts, user, kind in events:
        key = (hour_of(ts), partition_of(user, settings.partitions))
        groups.setdefault(key, []).append(Event(ts, user, Kind(kind)))
    nc = await nats.connect(settings.nats_url)
    js = nc.jetstream()
    pending = []
    for (hour, p), batch in groups.items():
        pending.append(
            await js.publish_async(subject(settings.subject_prefix, hour, p), encode(batch_of(tuple(batch))))
        )
        if len(pending) >= 1000:  # PubAcks awaited a thousand at a time
            await asyncio.gather(*pending)
            pending.clear()
    await asyncio.gather(*pending)
    await nc.close()
    return time.perf_counter() - started


async def settle(settings: Settings, events: list[tuple[int, str, str]], timeout: float = 900) -> None:
    """Until the projector applied every event and every hour older than the window left Redis."""
    hot_from = first_hot_hour(system_now_ms(), settings.hot_hours)
    old = {(hour_of(ts), partition_of(u, settings.partitions)) for ts, u, _ in events}
    expected = sum(1 for hour, _ in old if hot_from is not None and hour < hot_from)
    redis = Redis.from_url(settings.redis_url)
    nc = await nats.connect(settings.nats_url)
    try:
        deadline = time.monotonic() + timeout
        while not (await caught_up(settings, redis, nc) and await cold_count(settings, redis) >= expected):
            if time.monotonic() > deadline:
                raise TimeoutError(f"not settled after {timeout} s ({expected} hour-partitions to evict)")
            await asyncio.sleep(0.2)
    finally:
        await nc.close()
        await redis.aclose()


def check(read: Read, body: str, stamps: list[int]) -> bool:
    """Whether the server honoured `tz` (always for UTC); raises when an honoured read miscounts."""
    lines = body.strip().splitlines()
    rows, total = lines[1:-1], lines[-1].split(",")
    honoured = read.zone == "UTC" or any("+05:" in row.split(",")[0] for row in rows[:1])
    wanted = bisect.bisect_left(stamps, read.end_ms) - bisect.bisect_left(stamps, read.start_ms)
    got = int(total[2]) + int(total[3])
    if honoured and got != wanted:
        raise AssertionError(f"{read.zone} {read.name}: {got} events counted, {wanted} seeded")
    return honoured


@dataclass
class Timings:
    ms: dict[tuple[str, Read], list[float]] = field(default_factory=dict)
    """Milliseconds of each successful read, warm-up round excluded."""
    failed: dict[tuple[str, Read], list[int]] = field(default_factory=dict)
    """Status codes of the reads that did not answer 200 (a 503 when Redis took over its timeout)."""
    honoured: dict[Read, bool] = field(default_factory=dict)
    """Whether this checkout's server honoured each read's `tz`."""

    def cell(self, side: str, read: Read) -> str:
        ms, failed = self.ms.get((side, read)), self.failed.get((side, read), [])
        text = f"{statistics.median(ms):.1f} ms" if ms else ""
        if failed:
            text += f" ({len(failed)} x {failed[0]})"
        if side == "head" and not self.honoured.get(read, True):
            text += " (tz ignored)"
        return text.strip()

    def median(self, side: str, read: Read) -> float | None:
        """Of the reads that answered."""
        ms = self.ms.get((side, read))
        return statistics.median(ms) if ms else None


def time_reads(
    targets: dict[str, str], plan: list[tuple[str, Read]], rounds: int, stamps: list[int], redis_url: str
) -> Timings:
    """Each read of `plan` once a round, the order reversed every other round, after one warm-up round
    that also checks each answer's total. After a failed read, waits until Redis answers a PING: a
    script keeps running after its caller gave up, and would fail the next read too."""
    out = Timings()
    redis = SyncRedis.from_url(redis_url, socket_timeout=600)
    clients = {name: httpx.Client(base_url=url, timeout=300) for name, url in targets.items()}
    try:
        for r in range(rounds + 1):
            for side, read in plan if r % 2 == 0 else plan[::-1]:
                started = time.perf_counter()
                response = clients[side].get(read.path())
                ms = (time.perf_counter() - started) * 1000
                if response.status_code != 200:
                    out.failed.setdefault((side, read), []).append(response.status_code)
                    redis.ping()
                    if r == 0:
                        print(
                            f"  {side} {read.path()}: {response.status_code} {response.text[:120]}",
                            flush=True,
                        )
                elif r == 0 and side == "head":
                    out.honoured[read] = check(read, response.text, stamps)
                elif r > 0:
                    out.ms.setdefault((side, read), []).append(ms)
            print(f"  range round {r} done", flush=True)
    finally:
        for client in clients.values():
            client.close()
        redis.close()
    return out


def report_reads(timings: Timings, planned: list[Read], base: str) -> None:
    print("| range | " + " | ".join(ZONES) + f" | UTC, base {base} |")
    print("| --- " * (len(ZONES) + 2) + "|")
    by = {(r.zone, r.name): r for r in planned}
    for name in [name for name, _, _ in RANGES if ("UTC", name) in by]:
        cells = [timings.cell("head", by[z, name]) for z in ZONES] + [timings.cell("base", by["UTC", name])]
        print(f"| {name} | " + " | ".join(cells) + " |")
    print()
    if ("UTC", "a year by hour") not in by:
        return
    rows = [(z, "head", z) for z in ZONES] + [("UTC, base", "base", "UTC")]
    names = ("30 days by hour", "a year by day", "a year by hour")
    for title, side, z in rows:
        month, year_day, year_hour = (timings.median(side, by[z, name]) for name in names)
        if month is None or year_day is None or year_hour is None:
            print(f"{title:15} ratios n/a: every read of a range failed")
            continue
        rolled = z in DAY_ZONES.split(",")  # the day target is for days kept as rollups
        by_day, by_hour = year_day / month, year_hour / month
        day_verdict = ("ok" if by_day <= 1 else "OVER") if rolled else "no target: days composed"
        failed = any((side, by[z, name]) in timings.failed for name in names)
        print(
            f"{title:15} year by day / 30 days by hour = {by_day:5.2f} ({day_verdict} <= 1);"
            f"  year by hour / 30 days by hour = {by_hour:5.2f} ({'ok' if by_hour <= 12 else 'OVER'} <= 12)"
            + ("  [some reads failed: ratios of those that answered]" if failed else "")
        )


def current_hour_gets(
    wrk: str, urls: dict[str, str], script: Path, rounds: int, seconds: int, base: str
) -> None:
    for url in urls.values():
        run_wrk(wrk, url, script, 2)
    results: dict[str, list[WrkResult]] = {}
    for r in range(rounds):
        for name in ("base", "head") if r % 2 == 0 else ("head", "base"):
            got = run_wrk(wrk, urls[name], script, seconds)
            results.setdefault(name, []).append(got)
            print(f"  round {r + 1} GET {name:4} {got.rps:>9,.0f} req/s  p50 {got.p50_ms:.2f} ms", flush=True)
    med = {name: statistics.median(x.rps for x in v) for name, v in results.items()}
    p50 = {name: statistics.median(x.p50_ms for x in v) for name, v in results.items()}
    failures = sum(x.failures for v in results.values() for x in v)
    # Both sides of a round ran back to back, under the same neighbours: their ratio is steadier.
    paired = statistics.median(h.rps / b.rps for h, b in zip(results["head"], results["base"], strict=True))
    print(
        f"GET ?timestamp=now: base {base} {med['base']:,.0f} req/s (p50 {p50['base']:.2f} ms), head"
        f" {med['head']:,.0f} req/s (p50 {p50['head']:.2f} ms), head/base {med['head'] / med['base']:.3f}"
        f" (median of the rounds' ratios {paired:.3f}; failures {failures})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(prog="./just bench-ranges", description=__doc__)
    parser.add_argument("--base", default=BASE, help="the commit to compare with (default: the last release)")
    parser.add_argument("--rounds", type=int, default=9, help="timed rounds of range reads")
    parser.add_argument("--days", type=int, default=365, help="days of history seeded (and the long range)")
    parser.add_argument(
        "--hot-hours",
        type=int,
        default=0,
        help="ANALYTICS_HOT_HOURS; 0 (the default here) keeps every hour in Redis, as the issue measured",
    )
    parser.add_argument(
        "--seed", choices=("post", "stream"), default="post", help="POST each event, or publish to the stream"
    )
    parser.add_argument(
        "--redis-timeout", type=float, default=0, help="ANALYTICS_REDIS_TIMEOUT_S (default: the setting's)"
    )
    parser.add_argument("--get-rounds", type=int, default=10)
    parser.add_argument("--seconds", type=int, default=5, help="duration of one wrk round")
    parser.add_argument("--busy-events", type=int, default=200_000)
    parser.add_argument("--busy-users", type=int, default=50_000)
    parser.add_argument("--per-message", type=int, default=50, help="events per stream message (busy hour)")
    parser.add_argument("--skip", choices=("get", "busy"), action="append", default=[])
    args = parser.parse_args()
    wrk = ensure_wrk()
    now = system_now_ms()
    with scratch_servers("hourglass-ranges-") as scratch, checkout(args.base) as base_tree:
        log = scratch.workdir / "log"
        settings = scratch.settings.replace(
            http_workers=1, day_zones=DAY_ZONES, hot_hours=args.hot_hours, snapshot_interval_s=1
        )
        if args.redis_timeout:
            settings = settings.replace(redis_timeout_s=args.redis_timeout)
        env = settings_env(settings)
        subprocess.run([sys.executable, "-m", "projector", "stream"], env=env, check=True, timeout=60)
        ports = {"base": free_port(), "head": free_port()}
        trees = {"base": base_tree, "head": ROOT}
        servers = [
            tree_server(trees[n], settings_env(settings.replace(http_port=p)), log) for n, p in ports.items()
        ]
        urls = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
        with servers[0], servers[1], process([sys.executable, "-m", "projector", "run"], env, log):
            try:
                for url in urls.values():
                    wait_http(url, "/readyz")
                events = seed_events(now, args.days)
                if args.seed == "post":
                    took = asyncio.run(post_all(urls["head"], events))
                else:
                    took = asyncio.run(publish_all(settings, events))
                print(f"seeded {len(events):,} events by {args.seed} in {took:.1f} s", flush=True)
                started = time.perf_counter()
                asyncio.run(settle(settings, events))
                print(f"projected, old hours evicted, in {time.perf_counter() - started:.1f} s", flush=True)
            except (TimeoutError, RuntimeError):
                print(log.read_text()[-3000:], file=sys.stderr)
                raise
            stamps = sorted(ts for ts, _, _ in events)
            planned = [r for r in reads(now) if r.days <= args.days]
            plan = [("head", r) for r in planned] + [("base", r) for r in planned if r.zone == "UTC"]
            timings = time_reads(urls, plan, args.rounds, stamps, settings.redis_url)
            print()
            load = Path("/proc/loadavg").read_text().split()[:3]
            print(f"load average (1, 5, 15 min) after the range reads: {' '.join(load)}")
            print(
                f"Range reads, {len(events):,} events (3 an hour), hot window {args.hot_hours or 'none'} h,"
                f" ANALYTICS_DAY_ZONES={DAY_ZONES}, median of {args.rounds} rounds:"
            )
            report_reads(timings, planned, args.base)
            if "get" not in args.skip:
                print()
                script = scratch.workdir / "get.lua"
                script.write_text(GET_LUA.replace("{now}", str(system_now_ms())))
                current_hour_gets(wrk, urls, script, args.get_rounds, args.seconds, args.base)
        if "busy" not in args.skip:
            busy = hour_of(now) - 2
            sides = [
                busy_hour.run_side(
                    name, trees[name], settings, busy, args.busy_events, args.busy_users, args.per_message
                )
                for name in ("base", "head")
            ]
            print()
            busy_hour.report(sides, args.busy_events, args.busy_users, DAY_ZONES)


if __name__ == "__main__":
    main()
