"""What the audit costs: hours a minute and CPU, at full speed and under its CPU-share cap.

Run: ./just bench-audit [--hours N] [--events N] [--users N]   (own nats-server and valkey-server)

Publishes N closed hours of events (1,000 per message, as group commit writes them; one in ten
carries an Idempotency-Key, `--keyed`), folds them into Redis with a replay, then audits every hour
twice: once at full speed (`./just audit`'s path) and once as the continuous audit does, under
ANALYTICS_AUDIT_CPU_SHARE. Reports wall time, process CPU, hours a minute and the CPU share.
"""

from __future__ import annotations

import argparse
import asyncio
import time

import nats
from redis.asyncio import Redis

from contract.hours import partition_of, subject
from contract.schema import Event, Kind, batch_of, encode
from deploy.settings import Settings
from projector.audit.auditor import Auditor
from projector.audit.follow import Follower
from projector.audit.verdict import Verdict
from projector.log.stream_config import ensure_stream
from projector.replay.driver import replay
from tests.bench.servers import own_servers

PER_MESSAGE = 1000
FIRST_HOUR = 490_000


async def publish(settings: Settings, hours: int, events: int, users: int, keyed: int) -> None:
    nc = await nats.connect(settings.nats_url)
    js = nc.jetstream()
    await ensure_stream(nc, settings)
    for hour in range(FIRST_HOUR, FIRST_HOUR + hours):
        pending: dict[int, list[Event]] = {}
        for i in range(events):
            user = f"user-{(i * 7919) % users}"
            p = partition_of(user, settings.partitions)
            key = f"k-{hour}-{i}" if keyed and i % keyed == 0 else None
            bucket = pending.setdefault(p, [])
            bucket.append(
                Event(hour * 3_600_000 + i % 3_600_000, user, Kind(("click", "impression")[i % 2]), key)
            )
            if len(bucket) == PER_MESSAGE:
                await js.publish(subject(settings.subject_prefix, hour, p), encode(batch_of(tuple(bucket))))
                bucket.clear()
        for p, bucket in pending.items():
            if bucket:
                await js.publish(subject(settings.subject_prefix, hour, p), encode(batch_of(tuple(bucket))))
    await nc.close()


async def run(settings: Settings, hours: int, events: int, users: int, keyed: int) -> None:
    await publish(settings, hours, events, users, keyed)
    nc = await nats.connect(settings.nats_url)
    redis = Redis.from_url(settings.redis_url, socket_timeout=60)
    done = await replay(settings, nc, redis)
    print(f"{hours} hours of {events:,} events ({users:,} users) folded in {done.seconds:.1f}s", flush=True)
    auditor = await Auditor.open(settings, nc, redis)
    wall, cpu = time.perf_counter(), time.process_time()
    verdicts = [(await auditor.hour(h)).verdict for h in range(FIRST_HOUR, FIRST_HOUR + hours)]
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    assert set(verdicts) == {Verdict.OK}, verdicts
    rows = [("full speed (./just audit)", wall, cpu)]
    follower = Follower(settings, nc, redis)
    wall, cpu = time.perf_counter(), time.process_time()
    audited = await follower.pass_once()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    assert len(audited) == hours
    assert {a.verdict for a in audited} == {Verdict.OK}
    rows.append((f"continuous, CPU share {settings.audit_cpu_share:g}", wall, cpu))
    print()
    print("| audit | hours | wall | CPU | hours a minute | CPU share of one core |")
    print("| --- | --- | --- | --- | --- | --- |")
    for what, w, c in rows:
        print(f"| {what} | {hours} | {w:.1f} s | {c:.1f} s | {hours * 60 / w:.0f} | {c / w:.2f} |")
    await redis.aclose()
    await nc.close()


def main() -> None:
    parser = argparse.ArgumentParser(prog="./just bench-audit", description=__doc__)
    parser.add_argument("--hours", type=int, default=24)
    parser.add_argument("--events", type=int, default=20_000, help="events per hour")
    parser.add_argument("--users", type=int, default=5_000, help="distinct users")
    parser.add_argument("--cpu-share", type=float, default=0.1)
    parser.add_argument("--keyed", type=int, default=10, help="one event in this many has a key (0: none)")
    args = parser.parse_args()
    with own_servers() as (_, settings):
        settings = settings.replace(audit_cpu_share=args.cpu_share)
        asyncio.run(run(settings, args.hours, args.events, args.users, args.keyed))


if __name__ == "__main__":
    main()
