"""`./just bench-projector --wait-replicas 0 1 0 1`: the projector from a cold start with and without
WAIT after each apply, in turn, against the bench's Valkey given one replica (`--replicaof`)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import redis as redis_lib

from deploy.servers import valkey_command, wait_for_port
from tests.bench.run import process, wait_applied
from tests.bench.servers import Scratch
from tests.ports import free_port

BATCHES: tuple[tuple[str, dict[str, str]], ...] = (
    ("fetches of 1000 messages", {}),
    ("fetches of 20 messages", {"ANALYTICS_PROJECTOR_BATCH": "20"}),
)
"""Catching up (the default batch: few, big applies) and applies the size of a live one under load."""


def wait_rounds(
    scratch: Scratch,
    env: dict[str, str],
    events: int,
    rounds: list[int],
    cpu: Callable[..., tuple[float, ...]],
) -> None:
    """Each round: Redis emptied, then one projector applies the whole stream again with
    ANALYTICS_REDIS_WAIT_REPLICAS set to the round's value; events/s and Redis CPU per event."""
    primary = redis_lib.Redis.from_url(scratch.settings.redis_url)
    primary.config_set("repl-diskless-sync-delay", 0)
    port = primary.connection_pool.connection_kwargs["port"]
    replica_dir = scratch.workdir / "replica"
    replica_dir.mkdir()
    replica_port = free_port()
    command = [*valkey_command(replica_port, replica_dir), "--replicaof", "127.0.0.1", str(port)]
    log = scratch.workdir / "log"
    with log.open("ab") as out:
        replica = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for_port("127.0.0.1", replica_port, 20, replica)
        _wait_in_sync(redis_lib.Redis(port=replica_port))
        results = [
            (batch, *_round(scratch, {**env, **batch_env}, events, n, log, replica.pid, cpu))
            for batch, batch_env in BATCHES
            for n in rounds
        ]
    finally:
        replica.terminate()
        replica.wait(10)
        primary.close()
    print("WAIT after each apply, one replica (`--replicaof`), one projector from a cold start:")
    for batch, n, seconds, redis_us, replica_us in results:
        print(
            f"  {batch}, ANALYTICS_REDIS_WAIT_REPLICAS={n}: {events / seconds:,.0f} events/s "
            f"({seconds:.1f} s); "
            f"CPU per event: primary {redis_us:.2f} µs, replica {replica_us:.2f} µs"
        )


def _round(
    scratch: Scratch,
    env: dict[str, str],
    events: int,
    n: int,
    log: Path,
    replica_pid: int,
    cpu: Callable[..., tuple[float, ...]],
) -> tuple[int, float, float, float]:
    primary = redis_lib.Redis.from_url(scratch.settings.redis_url)
    primary.flushall()
    primary.close()
    own = {**env, "ANALYTICS_REDIS_WAIT_REPLICAS": str(n), "ANALYTICS_SNAPSHOT_INTERVAL_S": "0"}
    before = cpu(scratch.redis_pid, replica_pid)
    started = time.perf_counter()
    with process([sys.executable, "-m", "projector", "run"], own, log):
        asyncio.run(wait_applied(scratch.settings))
    seconds = time.perf_counter() - started
    after = cpu(scratch.redis_pid, replica_pid)
    return n, seconds, (after[1] - before[1]) / events * 1e6, (after[2] - before[2]) / events * 1e6


def _wait_in_sync(replica: redis_lib.Redis, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while replica.info("replication").get("master_link_status") != "up":
        if time.monotonic() > deadline:
            raise TimeoutError("the replica did not sync")
        time.sleep(0.05)
    replica.close()
