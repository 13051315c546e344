"""`./just bench-components`: what one of each engine handles on this machine, for docs/scaling.md.

- one JetStream stream, R1 and R3 (a 3-node cluster on loopback): appends through Hourglass's own
  appender, 64 in flight, of live-shaped messages (6 events) and of 1,000-event messages;
- one Redis with the apply script: applies of a fetch's worth of live-shaped messages, as the client
  sees them and as Redis spends them (`INFO commandstats`, microseconds per call, one core);
- two Redis servers, each holding half of the partitions, against one holding all of them;
- the publish path: Hourglass's appender (`ingest/appender.py`) against nats-py's `js.publish`.

The HTTP worker and the projector process are measured by `./just bench` (docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import nats
from nats.js.api import StreamConfig
from redis.asyncio import Redis

from contract import schema
from contract.hours import HOUR_MS, system_now_ms
from contract.keys import Keys
from deploy.servers import nats_cluster_command, nats_command, valkey_command, wait_for_port
from ingest.appender import Appender
from projector.fold.deltas import Deltas
from projector.projections.store import Outcome, ProjectionStore
from tests.ports import free_port
from tests.reference_fold import Message, fold

PARTITIONS = 4
IN_FLIGHT = 64


def batch(rng: random.Random, now: int, size: int, keyed_share: float, seq: int) -> schema.AnyBatch:
    events = []
    for i in range(size):
        ts = now if rng.random() > 0.05 else now - HOUR_MS * rng.randint(1, 5)
        key = f"k{seq}-{i}" if rng.random() < keyed_share else None
        kind = schema.Kind.CLICK if rng.random() < 0.3 else schema.Kind.IMPRESSION
        events.append(schema.Event(ts, f"user{rng.randrange(200_000)}", kind, key))
    return schema.batch_of(events=tuple(events))


@contextmanager
def started(argv: list[str], port: int) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        wait_for_port("127.0.0.1", port, 20, proc)
        yield proc
    finally:
        proc.terminate()
        proc.wait(15)


async def appends(urls: list[str], replicas: int, size: int, messages: int, nats_py: bool = False) -> float:
    """Messages per second appended (each awaited to its PubAck), IN_FLIGHT at a time, through
    Hourglass's appender or (`nats_py`) nats-py's `js.publish`."""
    nc = await nats.connect(urls)
    js = nc.jetstream()
    name = f"C{replicas}S{size}{'N' if nats_py else 'A'}"
    for _ in range(100):  # a new cluster elects its meta leader first
        try:
            await js.add_stream(StreamConfig(name=name, subjects=[f"{name}.>"], num_replicas=replicas))
            break
        except Exception:  # not ready yet; the loop bounds it
            await asyncio.sleep(0.2)
    rng = random.Random(1)
    now = system_now_ms()
    payloads = [schema.encode(batch(rng, now, size, 0.1, i)) for i in range(64)]
    appender = Appender(nc)
    todo = iter(range(messages))

    async def one_at_a_time() -> None:
        for i in todo:
            if nats_py:
                await js.publish(f"{name}.{i % PARTITIONS}", payloads[i % 64], timeout=10.0)
            else:
                await appender.append(f"{name}.{i % PARTITIONS}", payloads[i % 64], 10.0)

    t = time.perf_counter()
    await asyncio.gather(*(one_at_a_time() for _ in range(IN_FLIGHT)))
    elapsed = time.perf_counter() - t
    await js.delete_stream(name)
    await nc.close()
    return messages / elapsed


def fetch_deltas(rng: random.Random, now: int, seq: int, messages: int = 200, size: int = 6) -> Deltas:
    """One partition's fetch of live-shaped messages, folded."""
    return fold(Message(seq + i, batch(rng, now, size, 0.1, seq + i), now) for i in range(1, messages + 1))


async def applies(urls: list[str], rounds: int) -> tuple[float, float]:
    """(events applied a second as the client sees it, Redis microseconds per apply) with every
    partition applying concurrently; partition p goes to Redis p % len(urls)."""
    clients = [Redis.from_url(url) for url in urls]
    for client in clients:
        await client.config_resetstat()
    stores = [
        ProjectionStore(clients[p % len(clients)], Keys(f"c{p}"), partitions=PARTITIONS)
        for p in range(PARTITIONS)
    ]
    rng = random.Random(2)
    now = system_now_ms()
    work = [[fetch_deltas(rng, now, r * 200) for r in range(rounds)] for _ in range(PARTITIONS)]
    events = sum(d.events for ds in work for d in ds)

    async def partition(p: int) -> None:
        gen = await stores[p].current_generation(p)
        await stores[p].record_phases(gen, p, (0,))  # UTC's day rollups, as ./just up keeps
        mark = 0
        for deltas in work[p]:
            result = await stores[p].apply(gen, p, mark, deltas)
            # Checked: a refused apply (a generation or watermark moved) costs Redis almost nothing
            # and once made these figures 6x too good.
            assert result.outcome is Outcome.APPLIED, result
            mark = result.watermark

    t = time.perf_counter()
    await asyncio.gather(*(partition(p) for p in range(PARTITIONS)))
    elapsed = time.perf_counter() - t
    usec = []
    for client in clients:
        stats = await client.info("commandstats")
        usec.append(float(stats["cmdstat_evalsha"]["usec_per_call"]))
        await client.flushall()
        await client.aclose()
    return events / elapsed, statistics.mean(usec)


def main() -> None:
    parser = argparse.ArgumentParser(prog="./just bench-components", description=__doc__)
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--apply-rounds", type=int, default=50, help="fetches applied per partition")
    args = parser.parse_args()
    rows: list[str] = []
    with tempfile.TemporaryDirectory(prefix="hourglass-components-") as tmp_s, ExitStack() as stack:
        tmp = Path(tmp_s)
        single = free_port()
        (tmp / "r1").mkdir()
        stack.enter_context(started(nats_command(single, tmp / "r1"), single))
        ports, cports = [free_port() for _ in range(3)], [free_port() for _ in range(3)]
        for i, (port, cport) in enumerate(zip(ports, cports, strict=True)):
            store = tmp / f"r3-{i}"
            store.mkdir()
            peers = [p for p in cports if p != cport]
            stack.enter_context(started(nats_cluster_command(f"n{i}", port, cport, peers, store), port))
        redis_ports = [free_port(), free_port()]
        for i, port in enumerate(redis_ports):
            (tmp / f"v{i}").mkdir()
            stack.enter_context(started(valkey_command(port, tmp / f"v{i}"), port))
        r1 = [f"nats://127.0.0.1:{single}"]
        r3 = [f"nats://127.0.0.1:{p}" for p in ports]
        for size in (6, 1000):
            messages = args.messages if size == 6 else max(1, args.messages // 20)
            for label, urls, replicas in (("R1", r1, 1), ("R3", r3, 3)):
                rates = [asyncio.run(appends(urls, replicas, size, messages)) for _ in range(args.rounds)]
                rate = statistics.median(rates)
                rows.append(
                    f"| JetStream {label}, appends of {size}-event messages, {IN_FLIGHT} in flight | "
                    f"{rate:,.0f} messages/s | {rate * size:,.0f} events/s |"
                )
                print(rows[-1], flush=True)
        # The publish path: Hourglass's appender against nats-py's js.publish, alternating rounds.
        by: dict[bool, list[float]] = {False: [], True: []}
        for r in range(max(args.rounds, 5)):
            for nats_py in (r % 2 == 0, r % 2 == 1):
                by[nats_py].append(asyncio.run(appends(r1, 1, 6, args.messages, nats_py)))
        ours, theirs = statistics.median(by[False]), statistics.median(by[True])
        rows.append(
            f"| publish path, R1, 6-event messages: Hourglass's appender against nats-py's `js.publish` | "
            f"{ours:,.0f} against {theirs:,.0f} messages/s | {ours / theirs:.2f}x |"
        )
        print(rows[-1], flush=True)
        redis = [f"redis://127.0.0.1:{p}/0" for p in redis_ports]
        for label, urls in (("one Redis, 4 partitions", redis[:1]), ("two Redis, 2 partitions each", redis)):
            found = [asyncio.run(applies(urls, args.apply_rounds)) for _ in range(args.rounds)]
            rate = statistics.median(r for r, _ in found)
            usec = statistics.median(u for _, u in found)
            per_apply = 1200  # 200 messages of 6 events
            rows.append(
                f"| {label}: applies of 200 live-shaped messages (1,200 events) | {rate:,.0f} events/s "
                f"(client) | Redis {usec:,.0f} µs an apply: {per_apply * 1e6 / usec:,.0f} events/s per "
                "Redis core |"
            )
            print(rows[-1], flush=True)
    print()
    print("| component | measured | per event |")
    print("| --- | --- | --- |")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
