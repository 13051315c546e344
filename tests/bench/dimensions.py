"""`./just bench-dimensions`: what breakdowns cost, in one run on this machine: a busy hour applied with
and without dimensions (time, Redis CPU and memory per value), the cardinality bound under a flood of
new values, and breakdown reads through the real HTTP server over a day of 10,000 campaigns.

The events are folded and applied in-process (the projector's own digest and apply script, in applies
of about 800 events per partition, as a replay of a live-written stream makes them), so the figures are
the projections' cost, not the log's.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Iterator

import httpx
import redis as redis_lib

from contract import schema
from contract.hours import HOUR_MS, hour_of, partition_of, subject, system_now_ms
from deploy.projections_client import connect
from deploy.settings import Settings
from projector.fold.digest import digest
from projector.projections.store import ProjectionStore
from tests.bench.run import cpu, process, wait_http
from tests.bench.servers import scratch_servers
from tests.helpers import settings_env
from tests.ports import free_port

PER_MESSAGE, PER_APPLY = 4, 200
"""Events per message and messages per apply: about 800 events an apply, as a replay applies them."""


def busy_hour(hour: int, events: int, users: int, campaigns: int) -> Iterator[schema.Event]:
    """`events` events of `hour` by `users` users, each with a campaign (of `campaigns`), a creative (10
    per campaign) and a site (of 500), a third of them clicks."""
    for i in range(events):
        campaign = (i * 7919) % campaigns
        # Creative and site vary independently of the campaign (not a function of i modulo its count).
        dims = (
            ("campaign", f"cmp{campaign}"),
            ("creative", f"cmp{campaign}-{(i // campaigns) % 10}"),
            ("site", f"s{(i // 7 + i * 13) % 500}.example"),
        )
        kind = schema.Kind.CLICK if i % 3 == 0 else schema.Kind.IMPRESSION
        yield schema.Event(hour * HOUR_MS + i % HOUR_MS, f"user{(i * 104729) % users}", kind, None, dims)


async def apply_all(store: ProjectionStore, settings: Settings, events: Iterator[schema.Event]) -> int:
    """The events folded and applied partition by partition; returns how many."""
    per: dict[tuple[int, int], list[schema.Event]] = defaultdict(list)
    count = 0
    for event in events:
        per[(hour_of(event.ts), partition_of(event.user, settings.partitions))].append(event)
        count += 1
    dims = settings.dimension_names
    pairs = settings.dimension_pair_names
    seqs: dict[int, int] = defaultdict(int)
    for (hour, p), mine in sorted(per.items()):
        for start in range(0, len(mine), PER_MESSAGE * PER_APPLY):
            run = mine[start : start + PER_MESSAGE * PER_APPLY]
            batches = [run[i : i + PER_MESSAGE] for i in range(0, len(run), PER_MESSAGE)]
            subjects = [subject(settings.subject_prefix, hour, p)] * len(batches)
            payloads = [schema.encode(schema.batch_of(tuple(b))) for b in batches]
            numbers = list(range(seqs[p] + 1, seqs[p] + len(batches) + 1))
            done = digest(
                subjects, payloads, numbers, [hour * HOUR_MS] * len(batches),
                prefix=settings.subject_prefix, partitions=settings.partitions, dimensions=dims, pairs=pairs,
            )  # fmt: skip
            await store.apply(1, p, seqs[p], done.deltas, live=False, phases=settings.day_phases)
            seqs[p] = numbers[-1]
    return count


def axis_cells(client: redis_lib.Redis, settings: Settings) -> tuple[int, dict[str, int]]:
    """How many axis cells Redis holds, and per `#<dimension>` counter the largest over partitions."""
    cells, bounds = 0, defaultdict[str, int](int)
    for key in client.scan_iter(match=f"{settings.key_prefix}:*:axes", count=1000):
        for field, value in client.hgetall(key).items():
            name = field.decode() if isinstance(field, bytes) else str(field)
            if name.startswith("#"):
                bounds[name[1:]] = max(bounds[name[1:]], int(value))
            elif not name.startswith("!"):
                cells += 1
    return cells, dict(bounds)


async def measured(
    settings: Settings, redis_pid: int, events: Iterator[schema.Event]
) -> tuple[int, float, float]:
    """(events, wall seconds, Redis CPU seconds) of applying the events into an emptied Redis."""
    client = connect(settings)
    store = ProjectionStore.from_settings(client, settings)
    started, before = time.perf_counter(), cpu(redis_pid)[1]
    count = await apply_all(store, settings, events)
    took, used = time.perf_counter() - started, cpu(redis_pid)[1] - before
    await client.aclose()
    return count, took, used


def reads(base: str, paths: list[str], rounds: int) -> dict[str, float]:
    """Median milliseconds of each read, sent back to back on one connection."""
    out = {}
    with httpx.Client(base_url=base, timeout=60) as http:
        for path in paths:
            answer = http.get(path)
            assert answer.status_code == 200, (path, answer.status_code, answer.text)
            times = []
            for _ in range(rounds):
                started = time.perf_counter()
                http.get(path)
                times.append((time.perf_counter() - started) * 1000)
            out[path] = statistics.median(times)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(prog="./just bench-dimensions", description=__doc__)
    parser.add_argument("--events", type=int, default=200_000, help="events of the busy hour")
    parser.add_argument("--users", type=int, default=50_000)
    parser.add_argument("--campaigns", type=int, default=1_000, help="campaigns of the busy hour")
    parser.add_argument(
        "--flood", type=int, default=20_000, help="new campaigns in one hour and partition, one event each"
    )
    parser.add_argument("--day-events", type=int, default=20_000, help="events an hour of the day read")
    parser.add_argument("--day-campaigns", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=30, help="reads of each kind")
    args = parser.parse_args()
    hour = hour_of(system_now_ms()) - 30
    with scratch_servers("hourglass-dimensions-") as scratch:
        plain = scratch.settings.replace(dimensions="", snapshot_interval_s=0)
        dimensioned = scratch.settings.replace(snapshot_interval_s=0)
        client = redis_lib.Redis.from_url(scratch.settings.redis_url)
        rows = []
        memory = {}
        for name, settings in (
            ("none", plain),
            ("campaign, creative, site and campaign:creative", dimensioned),
        ):
            client.flushall()
            base = int(client.info("memory")["used_memory"])
            count, took, used = asyncio.run(
                measured(
                    settings, scratch.redis_pid, busy_hour(hour, args.events, args.users, args.campaigns)
                )
            )
            memory[name] = int(client.info("memory")["used_memory"]) - base
            rows.append((name, count / took, used / count * 1e6, memory[name]))
        cells, _ = axis_cells(client, dimensioned)
        per_value = (memory[rows[1][0]] - memory[rows[0][0]]) / max(1, cells)
        client.flushall()
        flood = (
            schema.Event(
                hour * HOUR_MS + i, "flood", schema.Kind.IMPRESSION, None, (("campaign", f"new{i}"),)
            )
            for i in range(args.flood)
        )
        asyncio.run(measured(dimensioned, scratch.redis_pid, flood))
        _, bounds = axis_cells(client, dimensioned)
        client.flushall()
        day = hour_of(system_now_ms()) // 24 * 24 - 48
        day_events = (
            event
            for h in range(day, day + 24)
            for event in busy_hour(h, args.day_events, args.users, args.day_campaigns)
        )
        count, took, _ = asyncio.run(measured(dimensioned, scratch.redis_pid, day_events))
        server_settings = dimensioned.replace(http_port=free_port(), http_workers=1, read_staleness_s=0)
        with process(
            [sys.executable, "-m", "server"], settings_env(server_settings), scratch.workdir / "server.log"
        ):
            base_url = f"http://127.0.0.1:{server_settings.http_port}"
            wait_http(base_url, "/healthz")
            span = f"from={day * HOUR_MS}&to={(day + 24) * HOUR_MS}"
            paths = [
                f"/analytics/breakdown?by=campaign&timestamp={day * HOUR_MS}&top=20",
                f"/analytics/breakdown?by=campaign&{span}&top=20",
                f"/analytics/breakdown?by=campaign&{span}&top=20&sort=unique_users",
                f"/analytics?timestamp={day * HOUR_MS}&campaign=cmp7",
                f"/analytics/range?{span}&campaign=cmp7",
            ]
            latency = reads(base_url, paths, args.rounds)
    report(args, rows, cells, per_value, bounds, dimensioned.dimension_max_values, (count, took), latency)
    print("(DAY is a UTC midnight two days ago; DAY+24h the next one)")


def report(
    args: argparse.Namespace,
    rows: list[tuple[str, float, float, int]],
    cells: int,
    per_value: float,
    bounds: dict[str, int],
    bound: int,
    day: tuple[int, float],
    latency: dict[str, float],
) -> None:
    print(f"./just bench-dimensions (one Valkey node, {Settings().partitions} partitions)")
    print(
        f"A busy hour: {args.events:,} events, {args.users:,} users, "
        f"{args.campaigns:,} campaigns x 10 creatives, 500 sites"
    )
    print("| dimensions | applied events/s | Redis CPU per event | Redis memory |")
    print("| --- | --- | --- | --- |")
    for name, rate, redis_us, mem in rows:
        print(f"| {name} | {rate:,.0f} | {redis_us:.1f} µs | {mem / 2**20:.1f} MiB |")
    print(
        f"with / without: events/s {rows[1][1] / rows[0][1]:.3f}x, Redis CPU {rows[1][2] / rows[0][2]:.1f}x; "
        f"{cells:,} axis cells (value, hour, partition), {per_value:,.0f} bytes each"
    )
    print(
        f"A flood of {args.flood:,} new campaigns in one hour and partition: values with cells at most "
        f"{bounds.get('campaign', 0):,} (bound {bound:,})"
    )
    count, took = day
    print(
        f"A day of {args.day_campaigns:,} campaigns ({count:,} events, applied at {count / took:,.0f}/s); "
        f"median of {args.rounds} reads, back to back:"
    )
    for path, ms in latency.items():
        print(f"  {ms:8.1f} ms  GET {path}")


if __name__ == "__main__":
    main()
