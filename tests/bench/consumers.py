"""How the projector should read the log: a durable consumer with explicit acks, or an ephemeral one without.

Run: ./just bench-consumers [--messages N] [--rounds R]   (own nats-server on a free port, temp dir)

Redis holds the projector's position (the watermark), so acks only tell JetStream what Redis already
knows. This writes N live-shaped messages (6 events each, as group commit writes them at moderate load)
and reads them all, in alternating rounds, through each kind of pull consumer with the projector's
fetch size, acking as the projector does where the consumer wants acks. Medians, and the ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import nats
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from contract.hours import hour_of, subject, system_now_ms
from contract.schema import Event, Kind, batch_of, encode
from deploy.servers import nats_command, wait_for_port
from tests.ports import free_port

STREAM = "BENCHREAD"
PREFIX = "benchread.events"
FETCH = 200


async def fill(url: str, messages: int) -> None:
    nc = await nats.connect(url)
    js = nc.jetstream()
    await js.add_stream(name=STREAM, subjects=[f"{PREFIX}.>"])
    now = system_now_ms()
    payload = encode(batch_of(events=tuple(Event(now, f"user-{i}", Kind.CLICK) for i in range(6))))
    where = subject(PREFIX, hour_of(now), 0)
    pending = [js.publish(where, payload) for _ in range(messages)]
    for i in range(0, len(pending), 500):
        await asyncio.gather(*pending[i : i + 500])
    await nc.close()


async def read_all(url: str, acks: bool, messages: int) -> float:
    nc = await nats.connect(url)
    js = nc.jetstream()
    config = ConsumerConfig(
        ack_policy=AckPolicy.EXPLICIT if acks else AckPolicy.NONE,
        deliver_policy=DeliverPolicy.ALL,
        max_ack_pending=20_000 if acks else None,
        inactive_threshold=None if acks else 30.0,
    )
    durable = "bench-durable" if acks else None
    sub = await js.pull_subscribe(f"{PREFIX}.>", durable=durable, stream=STREAM, config=config)
    got = 0
    started = time.perf_counter()
    while got < messages:
        batch = await sub.fetch(FETCH, timeout=5)
        got += len(batch)
        if acks:
            for msg in batch:
                await msg.ack()
    seconds = time.perf_counter() - started
    await sub.unsubscribe()
    if acks:
        await js.delete_consumer(STREAM, "bench-durable")
    await nc.close()
    return messages / seconds


async def run(url: str, messages: int, rounds: int) -> None:
    await fill(url, messages)
    results: dict[str, list[float]] = {"durable, explicit acks": [], "ephemeral, no acks": []}
    for r in range(rounds):
        order = [(True, "durable, explicit acks"), (False, "ephemeral, no acks")]
        for acks, name in order if r % 2 == 0 else reversed(order):
            rate = await read_all(url, acks, messages)
            results[name].append(rate)
            print(f"  round {r + 1} {name:<24} {rate:>10,.0f} msgs/s", flush=True)
    durable = statistics.median(results["durable, explicit acks"])
    ephemeral = statistics.median(results["ephemeral, no acks"])
    print()
    print(f"| consumer | messages/s (median of {rounds}) | events/s at 6 per message |")
    print("| --- | --- | --- |")
    print(f"| durable, explicit acks | {durable:,.0f} | {6 * durable:,.0f} |")
    print(f"| ephemeral, no acks | {ephemeral:,.0f} | {6 * ephemeral:,.0f} |")
    print(f"\nephemeral / durable = {ephemeral / durable:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(prog="./just bench-consumers", description=__doc__)
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        proc = subprocess.Popen(
            nats_command(port, Path(tmp)), stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT
        )
        try:
            wait_for_port("127.0.0.1", port, 20)
            asyncio.run(run(f"nats://127.0.0.1:{port}", args.messages, args.rounds))
        finally:
            proc.terminate()
            proc.wait(10)


if __name__ == "__main__":
    main()
