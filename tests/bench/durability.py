"""What `sync_interval: "always"` costs: JetStream publish rate and latency, default vs strict, same run.

Run: ./just bench-durability   (alternating rounds; medians; the ratio is what to read on a noisy machine)
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nats

from deploy.servers import NATS_CONF, durable_nats_conf, nats_command, wait_for_port
from tests.ports import free_port

ROUNDS = 5
MESSAGES = 4000
IN_FLIGHT = 64
PAYLOAD = b'{"v":1,"events":[[1764079200000,"user-12345","click",null]]}'


async def measure(url: str, stream: str) -> tuple[float, float]:
    """(messages per second, p50 PubAck latency in ms) with IN_FLIGHT concurrent publishers."""
    nc = await nats.connect(url)
    js = nc.jetstream()
    await js.add_stream(name=stream, subjects=[f"{stream}.>"])
    latencies: list[float] = []
    queue = iter(range(MESSAGES))

    async def publisher() -> None:
        for _ in queue:
            t = time.perf_counter()
            await js.publish(f"{stream}.x", PAYLOAD)
            latencies.append(time.perf_counter() - t)

    started = time.perf_counter()
    await asyncio.gather(*(publisher() for _ in range(IN_FLIGHT)))
    elapsed = time.perf_counter() - started
    await js.delete_stream(stream)
    await nc.close()
    return MESSAGES / elapsed, statistics.median(latencies) * 1000


def main() -> None:
    argparse.ArgumentParser(prog="./just bench-durability", description=__doc__).parse_args()
    results: dict[str, list[tuple[float, float]]] = {"default (2m)": [], "always": []}
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        confs = {"default (2m)": NATS_CONF, "always": durable_nats_conf(base)}
        servers = {}
        for name, conf in confs.items():
            port = free_port()
            store = base / name.split()[0]
            store.mkdir()
            proc = subprocess.Popen(
                nats_command(port, store, conf), stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT
            )
            wait_for_port("127.0.0.1", port, 20, proc)
            servers[name] = (port, proc)
        try:
            for r in range(ROUNDS):
                for name, (port, _) in servers.items():
                    results[name].append(asyncio.run(measure(f"nats://127.0.0.1:{port}", f"B{r}")))
        finally:
            for _, proc in servers.values():
                proc.terminate()
                proc.wait()
    base_rate = statistics.median(r for r, _ in results["default (2m)"])
    print(f"JetStream publish, {MESSAGES} msgs x {ROUNDS} rounds, {IN_FLIGHT} in flight, medians:")
    print(f"{'sync_interval':<14} {'msgs/s':>10} {'p50 ms':>8} {'vs default':>11}")
    for name, rows in results.items():
        rate = statistics.median(r for r, _ in rows)
        p50 = statistics.median(lat for _, lat in rows)
        print(f"{name:<14} {rate:>10,.0f} {p50:>8.2f} {rate / base_rate:>10.2f}x")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
