"""ANALYTICS_REDIS_WAIT_REPLICAS on a real Valkey primary with one real replica (`--replicaof`)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import pytest
from redis.asyncio import Redis

from contract.keys import Keys
from deploy.servers import free_port, valkey_command, wait_for_port
from projector.fold.deltas import Deltas
from projector.projections.store import Outcome, ProjectionStore
from tests.helpers import eventually, metric, pause

HOUR = 480_000


@contextmanager
def valkey(data_dir: Path, *extra: str) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    data_dir.mkdir()
    port = free_port()
    log = (data_dir / "log").open("wb")
    proc = subprocess.Popen([*valkey_command(port, data_dir), *extra], stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for_port("127.0.0.1", port, 20, proc)
        yield port, proc
    finally:
        with suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGCONT)  # a test may have left it stopped
        proc.terminate()
        proc.wait(10)
        log.close()


@pytest.fixture
async def pair(tmp_path: Path) -> AsyncIterator[tuple[Redis, Redis, subprocess.Popen[bytes]]]:
    """(the primary, its replica in sync, the replica's process)."""
    # No 5 s pause before the replica's full sync (diskless sync's default delay).
    with valkey(tmp_path / "primary", "--repl-diskless-sync-delay", "0") as (primary_port, _):
        replicaof = ("--replicaof", "127.0.0.1", str(primary_port))
        with valkey(tmp_path / "replica", *replicaof) as (replica_port, replica_proc):
            primary = Redis.from_url(f"redis://127.0.0.1:{primary_port}/0")
            replica = Redis.from_url(f"redis://127.0.0.1:{replica_port}/0")
            await eventually(lambda: replica.info("replication"), lambda i: i["master_link_status"] == "up")
            yield primary, replica, replica_proc
            await primary.aclose()
            await replica.aclose()


def deltas(last_seq: int) -> Deltas:
    found = Deltas(last_seq=last_seq, events=1)
    delta = found.hour(HOUR)
    delta.clicks, delta.users = 1, {f"user-{last_seq}"}
    return found


async def test_an_apply_returns_only_once_the_replica_holds_it(
    pair: tuple[Redis, Redis, subprocess.Popen[bytes]],
) -> None:
    primary, replica, replica_proc = pair
    keys = Keys("w")
    store = ProjectionStore(primary, keys, wait=(1, 5000))
    short = metric("hourglass_projector_wait_short_total")
    await store.current_generation()
    for seq in range(1, 51):
        result = await store.apply(1, 0, seq - 1, deltas(seq))
        assert result.outcome is Outcome.APPLIED
        # Read at once from the replica, no polling: WAIT returned, so it has this apply.
        assert int(await replica.get(keys.watermark(1, 0)) or 0) == seq
    assert await replica.hget(keys.counts(1, HOUR, 0), "clicks") == b"50"
    # A replica that stalls (stopped for 0.3 s) holds the apply back until it has caught up.
    pause(replica_proc.pid)
    asyncio.get_running_loop().call_later(0.3, os.kill, replica_proc.pid, signal.SIGCONT)
    started = time.monotonic()
    assert (await store.apply(1, 0, 50, deltas(51))).outcome is Outcome.APPLIED
    assert time.monotonic() - started >= 0.25
    assert int(await replica.get(keys.watermark(1, 0)) or 0) == 51
    assert metric("hourglass_projector_wait_short_total") == short


async def test_with_the_replica_gone_an_apply_waits_out_the_timeout_and_goes_on(
    pair: tuple[Redis, Redis, subprocess.Popen[bytes]],
) -> None:
    primary, _, replica_proc = pair
    store = ProjectionStore(primary, Keys("w"), wait=(1, 50))
    await store.current_generation()
    replica_proc.kill()
    replica_proc.wait()
    short = metric("hourglass_projector_wait_short_total")
    for seq in range(1, 4):
        assert (await store.apply(1, 0, seq - 1, deltas(seq))).outcome is Outcome.APPLIED
    assert metric("hourglass_projector_wait_short_total") == short + 3
    await primary.script_flush()  # as on a promoted replica: the script cache is empty
    assert (await store.apply(1, 0, 3, deltas(4))).outcome is Outcome.APPLIED
    assert await store.watermark(1, 0) == 4
