"""The fault harness: a 3-node JetStream cluster, Valkey and two projectors, each in a namespace of its
own, an HTTP app in the test process, and schedules of partitions and pauses run under keyed load.

After each schedule heals, the checker settles and compares: every acknowledged event counted exactly
once, nothing counted that was never sent, the three nodes holding the same stream, the audit clean,
and no read answering anything but 200 or 503, nor a settled closed hour other than its counts.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import nats
from nats.js.api import ConsumerConfig, DeliverPolicy
from nats.js.errors import ServiceUnavailableError

from contract import schema
from contract.hours import hour_of, hour_token, system_now_ms
from deploy.credentials import Secrets, ensure_secrets, write_nats_config, write_redis_acl
from deploy.projections_client import connect
from deploy.servers import (
    NATS_CONF,
    ROOT,
    durable_nats_conf,
    nats_cluster_command,
    valkey_command,
    wait_for_port,
)
from deploy.settings import Settings
from projector.log.ephemeral_read import delivered
from server.app import create_app
from tests.faults.digest import node_digest
from tests.faults.lazyfs import LazyDisk
from tests.faults.network import Network, Node
from tests.faults.schedules import ON_LAZY_DISKS, SCHEDULES
from tests.helpers import eventually, isolated_settings, serve, settings_env, settle, stored_hours
from tests.integration.conftest import make_stream
from tests.integration.load import ClosedHour, Tally, drive, wait_until_done

CLOSED_HOURS_FROM = hour_of(1_735_689_600_000)  # 2025-01-01T00:00Z: schedule N reads hour N after it
"""Fixed hours, not hours before now: a run that crosses an hour boundary must not give two schedules one."""

NATS_PORT, ROUTE_PORT, MONITOR_PORT, VALKEY_PORT = 4222, 6222, 8222, 6379
"""The same in every namespace: each node has a network of its own."""


@dataclass
class Process:
    node: Node
    argv: list[str]
    env: dict[str, str] | None
    log: Path
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                self.node.argv(self.argv), env=self.env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT
            )

    def signal(self, sig: signal.Signals) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)

    def kill(self) -> None:
        """SIGKILL, as a crash would; `start` brings it back on the same data."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
            self.proc.wait(10)


@dataclass
class Cluster:
    """The servers and projectors of one harness run, and the settings every client uses."""

    net: Network
    settings: Settings
    nats: dict[str, Process]
    valkey: Process
    projectors: dict[str, Process]
    secrets: Secrets
    disks: dict[str, LazyDisk]
    """Each nats-server's disk, when the stores run on LazyFS; empty otherwise."""
    sync_always: bool

    def lose_power(self, names: list[str]) -> None:
        """Those nodes' machines lose power: servers SIGKILLed, unsynced writes dropped, disks mounted
        again; each server stays down until its `start`."""
        for name in names:
            self.nats[name].kill()
        for name in names:
            self.disks[name].lose_power()
            self.disks[name].start()

    def dropped(self) -> int:
        """Unsynced bytes dropped by every power loss so far."""
        return sum(sum(disk.dropped) for disk in self.disks.values())

    def nats_node(self, name: str) -> Node:
        return self.nats[name].node

    async def leader(self) -> str:
        nc = await nats.connect(**self.settings.nats_options("faults-leader"))
        try:
            info = await eventually(
                lambda: nc.jetstream().stream_info(self.settings.stream_name),
                lambda i: bool(i.cluster and i.cluster.leader),
                timeout=30,
            )
        finally:
            await nc.close()
        assert info.cluster is not None
        assert info.cluster.leader is not None
        return info.cluster.leader

    def serving(self, client: str) -> str | None:
        """The node a NATS client of this name is connected to (each node's /connz), if any."""
        for name, process in self.nats.items():
            url = f"http://{process.node.ip}:{MONITOR_PORT}/connz?limit=1024"
            with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=2) as answer:
                if any(c.get("name") == client for c in json.load(answer).get("connections") or []):
                    return name
        return None

    async def digests(self, last_seq: int) -> dict[str, str | None]:
        """Each node's hash of the stream's messages up to `last_seq` (tests/faults/digest.py), None
        where it did not answer."""
        out: dict[str, str | None] = {}
        for name, process in self.nats.items():
            url = self.secrets.nats_url("admin", process.node.ip, NATS_PORT)
            try:
                out[name] = await node_digest(url, self.settings.stream_name, last_seq)
            except (TimeoutError, nats.errors.Error, OSError):
                out[name] = None
        return out

    def stream_states(self) -> dict[str, tuple[int, int, int, int] | None]:
        """(messages, bytes, first seq, last seq) of the stream as each node holds it (its monitoring
        port's /jsz), or None where the node does not answer or lacks the stream."""
        out: dict[str, tuple[int, int, int, int] | None] = {}
        for name, process in self.nats.items():
            url = f"http://{process.node.ip}:{MONITOR_PORT}/jsz?accounts=true&streams=true"
            try:
                with urllib.request.urlopen(url, timeout=2) as answer:  # our own node, on our own bridge
                    jsz = json.load(answer)
            except OSError:
                out[name] = None
                continue
            out[name] = None
            for account in jsz.get("account_details") or []:
                for stream in account.get("stream_detail") or []:
                    if stream["name"] == self.settings.stream_name:
                        s = stream["state"]
                        out[name] = (s["messages"], s["bytes"], s["first_seq"], s["last_seq"])
        return out


@contextlib.asynccontextmanager
async def running_cluster(
    directory: Path, *, lazy_disks: bool = False, sync_always: bool = False
) -> AsyncIterator[Cluster]:
    """The cluster, torn down on exit; `lazy_disks` puts each store on LazyFS, `sync_always` makes
    nats-server fsync before every PubAck (Hourglass's durable mode)."""
    with Network.created() as net:
        names = ("n1", "n2", "n3")
        nodes = {name: net.add(name) for name in (*names, "valkey", "p1", "p2")}
        secrets = ensure_secrets(directory)
        base = Settings()
        config = write_nats_config(secrets, base, durable_nats_conf(directory) if sync_always else NATS_CONF)
        acl = write_redis_acl(secrets, base)
        routes = f"route:{secrets.nats['admin']}"
        servers: dict[str, Process] = {}
        disks = {
            name: LazyDisk(directory / f"{name}.disk", directory / name, directory / f"{name}.lazyfs.log")
            for name in (names if lazy_disks else ())
        }
        for name in names:
            store = directory / name
            store.mkdir(parents=True, exist_ok=True)
            peers = [nodes[n].ip for n in names if n != name]
            argv = [
                *nats_cluster_command(
                    name, NATS_PORT, ROUTE_PORT, [ROUTE_PORT] * 2, store, config, routes,
                    host=nodes[name].ip, peer_hosts=peers,
                ),
                "-m", str(MONITOR_PORT),
            ]  # fmt: skip
            servers[name] = Process(nodes[name], argv, None, directory / f"{name}.log")
        (directory / "valkey").mkdir(parents=True, exist_ok=True)
        valkey_argv = valkey_command(VALKEY_PORT, directory / "valkey", acl, host=nodes["valkey"].ip)
        valkey = Process(nodes["valkey"], valkey_argv, None, directory / "valkey.log")
        nats_url = ",".join(secrets.nats_url("admin", nodes[n].ip, NATS_PORT) for n in names)
        redis_url = secrets.redis_url("admin", nodes["valkey"].ip, VALKEY_PORT)
        settings = isolated_settings(
            nats_url, redis_url, stream_replicas=3, projector_batch=50, publish_timeout_s=2.0
        )
        env = settings_env(settings)
        projectors = {
            p: Process(nodes[p], [sys.executable, "-m", "projector", "run"], env, directory / f"{p}.log")
            for p in ("p1", "p2")
        }
        cluster = Cluster(net, settings, servers, valkey, projectors, secrets, disks, sync_always)
        everything = [*servers.values(), valkey, *projectors.values()]
        try:
            for disk in disks.values():
                disk.start()
            for process in [*servers.values(), valkey]:
                process.start()
            for name in names:
                wait_for_port(nodes[name].ip, NATS_PORT, 20, servers[name].proc)
            wait_for_port(nodes["valkey"].ip, VALKEY_PORT, 20, valkey.proc)
            await make_stream(settings, timeout=60)
            for process in projectors.values():
                process.start()
            yield cluster
        finally:
            for process in reversed(everything):
                process.stop()
            for disk in disks.values():
                disk.stop()


@contextlib.asynccontextmanager
async def http_on(cluster: Cluster) -> AsyncIterator[httpx.AsyncClient]:
    """The HTTP app in this process against the cluster, once it answers ready."""
    async for client in serve(create_app(cluster.settings)):
        await eventually(functools.partial(client.get, "/readyz"), lambda r: r.status_code == 200, 60)
        yield client


@dataclass
class Row:
    schedule: str
    seconds: float
    acknowledged: int = 0
    during: int = 0
    """Of them, how many were acknowledged while the fault lasted: how available ingest stayed."""
    logged: int = 0
    """Of the acknowledged events, how many the stream holds (their keys)."""
    counted: int = 0
    lost: int = 0
    doubled: int = 0
    retried: int = 0
    """503s and answerless requests, each retried with the same key (never counted twice)."""
    nodes_agree: bool = False
    """The nodes report the same stream state on /jsz, and hold the same messages (digests)."""
    digests: dict[str, str | None] = field(default_factory=dict)
    audit: str = ""
    bad_reads: list[str] = field(default_factory=list)
    dropped: int | None = None
    """Unsynced bytes the power losses dropped, on LazyFS; None where nothing ran on it."""
    stalled: str = ""
    """Why the load never got going again after the schedule (say, the stream was lost)."""

    @property
    def ok(self) -> bool:
        clean = self.audit == "clean" and not self.bad_reads and not self.stalled
        return not self.lost and not self.doubled and self.nodes_agree and clean

    HEADER = (
        f"{'schedule':<40} {'s':>4} {'acked':>7} {'during':>7} {'logged':>7} {'counted':>7} {'lost':>5} "
        f"{'doubled':>7} {'retried':>7} {'agree':>5}  audit  bad reads  dropped"
    )

    def line(self) -> str:
        return (
            f"{self.schedule:<40} {self.seconds:>4.0f} {self.acknowledged:>7} {self.during:>7} "
            f"{self.logged:>7} {self.counted:>7} {self.lost:>5} {self.doubled:>7} {self.retried:>7} "
            f"{'yes' if self.nodes_agree else 'NO':>5}  "
            f"{self.audit[:6]:<6} {len(self.bad_reads):>9}  "
            f"{'-' if self.dropped is None else f'{self.dropped / 1e6:.2f} MB'}"
        )


async def _read_on(
    http: httpx.AsyncClient, now_ms: int, closed: ClosedHour, stop: asyncio.Event, row: Row
) -> None:
    """A dashboard's polling: the current hour and a closed one, each answer checked."""
    while not stop.is_set():
        try:
            current = await http.get("/analytics", params={"timestamp": now_ms})
            if current.status_code not in (200, 503):
                row.bad_reads.append(f"current hour: {current.status_code} {current.text[:200]}")
        except httpx.TransportError:
            pass
        answer = await closed.check(http)
        if answer is not None and answer.status_code not in (200, 503):
            row.bad_reads.append(f"closed hour: {answer.status_code} {answer.text[:200]}")
        await asyncio.sleep(0.05)  # a poller's pace, not a wait for consistency
    row.bad_reads += [f"closed hour answered {got}, settled {closed.counts}" for got in closed.wrong]


async def logged_keys(settings: Settings, prefix: str) -> set[str]:
    """The Idempotency-Keys starting with `prefix` of every event the stream holds: what was logged,
    to tell a loss in the log from a loss between the log and the projections. Read as the audit reads
    the log (`ephemeral_read.py`: a consumer that goes quiet after a heal is taken over)."""
    nc = await nats.connect(**settings.nats_options("faults-log"))
    try:
        deadline = time.monotonic() + 60
        while True:
            found: set[str] = set()
            config = ConsumerConfig(
                filter_subject=f"{settings.subject_prefix}.>", deliver_policy=DeliverPolicy.ALL
            )
            batches = delivered(nc, settings.stream_name, config, settings.pull_reader)
            try:
                async with contextlib.aclosing(batches):
                    async for fetched in batches:
                        for payload in fetched.payloads:
                            with contextlib.suppress(Exception):  # a dead letter or a foreign message
                                found |= {
                                    e.key
                                    for e in schema.decode(payload).events
                                    if e.key and e.key.startswith(prefix)
                                }
                return found
            except (ServiceUnavailableError, nats.errors.TimeoutError, TimeoutError):
                # After a heal the meta leader may still be elected: JetStream answers 503 a while.
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.5)
    finally:
        await nc.close()


async def _settled_counts(settings: Settings, hours: list[int]) -> dict[int, int]:
    """Clicks plus impressions of each hour in Redis, once every partition has applied the whole log."""
    nc = await nats.connect(**settings.nats_options("faults-check"))
    redis = connect(settings)
    try:
        await settle(nc, redis, settings, timeout=120)
        stored = await stored_hours(redis, settings, hours)
    finally:
        await nc.close()
        await redis.aclose()
    return {hour: totals.clicks + totals.impressions for hour, totals in stored.items()}


AUDIT_TIMEOUT_S = 900.0
"""A 300 s run leaves about a million events in the load's hours: on 2 cores their audit outlasted 120 s."""


def _audit(settings: Settings, hours: list[int]) -> str:
    try:
        done = subprocess.run(
            [sys.executable, "-m", "projector", "audit", *(hour_token(h) for h in hours)],
            env=settings_env(settings), cwd=ROOT, capture_output=True, text=True, timeout=AUDIT_TIMEOUT_S,
            check=False,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        return f"timed out after {AUDIT_TIMEOUT_S:.0f} s"
    if done.returncode == 0 and " 0 mismatched" in done.stdout:
        return "clean"
    return f"exit {done.returncode}: {(done.stdout + done.stderr).strip()[-3000:]}"


async def run_schedule(
    cluster: Cluster, http: httpx.AsyncClient, name: str, seconds: float, seed: int
) -> Row:
    """Load, the schedule, heal, then the checks; one row."""
    row, settings = Row(name, seconds), cluster.settings
    dropped_before = cluster.dropped()
    now = system_now_ms()
    hours = list(range(hour_of(now) - 7, hour_of(now) + 1))  # where the load writes (workload.mixed_events)
    before = await _settled_counts(settings, hours)  # earlier schedules' events, in the same hours
    closed = await ClosedHour.written(http, CLOSED_HOURS_FROM + seed)
    tally, stop = Tally(), asyncio.Event()
    events = int((seconds + 60) * 1500)  # more than the load gets through: it stops when told
    load = asyncio.create_task(
        drive(
            http,
            now,
            events,
            8,
            duplicate_every=10,
            seed=seed,
            tally=tally,
            until=stop,
            timeout=seconds + 180,
        )
    )
    reads = asyncio.create_task(_read_on(http, now, closed, stop, row))
    await wait_until_done(tally, 50)
    before_fault = tally.done
    await SCHEDULES[name](cluster, seconds)
    row.during = tally.done - before_fault
    try:
        await wait_until_done(tally, tally.done + 50, timeout=120)  # the load goes on after the heal
    except AssertionError as stalled:
        row.stalled = str(stalled)
    stop.set()
    if row.stalled:
        load.cancel()
        await asyncio.gather(load, return_exceptions=True)
        await reads
        return await _after_a_stall(cluster, row, tally, seed, dropped_before)
    await load
    await reads
    after = await _settled_counts(settings, hours)
    truth = tally.truth
    assert set(truth.hours()) <= set(hours), (truth.hours(), hours)
    row.acknowledged = tally.events
    row.logged = len(await logged_keys(settings, f"ev-{seed}-"))
    row.retried = tally.unavailable + tally.transport_errors
    if cluster.disks:
        row.dropped = cluster.dropped() - dropped_before
    for hour in hours:
        want = truth.clicks[hour] + truth.impressions[hour]
        have = after[hour] - before[hour]
        row.counted += have
        row.lost += max(0, want - have)
        row.doubled += max(0, have - want)
    try:
        states = await eventually(
            lambda: asyncio.to_thread(cluster.stream_states),
            lambda s: None not in s.values() and len(set(s.values())) == 1,
            timeout=60,
        )
        row.digests = await cluster.digests(max(s[3] for s in states.values() if s is not None))
        row.nodes_agree = None not in row.digests.values() and len(set(row.digests.values())) == 1
    except AssertionError:
        row.nodes_agree = False
    closed_hours = [h for h in truth.hours() if h < hour_of(system_now_ms())]
    row.audit = await asyncio.to_thread(_audit, settings, closed_hours) if closed_hours else "clean"
    return row


async def _after_a_stall(cluster: Cluster, row: Row, tally: Tally, seed: int, dropped_before: int) -> Row:
    """What can be checked when the cluster never took writes again (the stream lost): how many
    acknowledged events the log still holds. Events in flight at the stall were never acknowledged."""
    row.acknowledged = tally.done
    try:
        row.logged = len(await logged_keys(cluster.settings, f"ev-{seed}-"))
    except (TimeoutError, nats.errors.Error, OSError):
        row.logged = 0
    row.lost = max(0, row.acknowledged - row.logged)
    row.retried = tally.unavailable + tally.transport_errors
    row.nodes_agree = False
    row.audit = "not run"
    if cluster.disks:
        row.dropped = cluster.dropped() - dropped_before
    return row


async def run(names: list[str], seconds: float, directory: Path, *, sync_always: bool) -> list[Row]:
    """The partition schedules on one cluster, then the power losses on another whose stores are on
    LazyFS; one row each, printed as it comes."""
    rows = []
    for lazy in (False, True):
        group = [name for name in names if (name in ON_LAZY_DISKS) == lazy]
        if not group:
            continue
        where = directory / ("lazy" if lazy else "plain")
        running = running_cluster(where, lazy_disks=lazy, sync_always=sync_always)
        async with running as cluster, http_on(cluster) as http:
            for name in group:
                started = time.monotonic()
                seed = list(SCHEDULES).index(name) + 1  # its own keys, users and closed hour
                row = await run_schedule(cluster, http, name, seconds, seed)
                rows.append(row)
                print(f"{row.line()}   ({time.monotonic() - started:.0f} s)", flush=True)
                if row.stalled:
                    print(f"  {name}: {row.stalled}; the schedules after it need a new cluster")
                    break
    return rows


def main() -> None:
    """`./just faults [--schedule NAME ...] [--seconds N] [--sync default|always]`."""
    import argparse
    import tempfile

    parser = argparse.ArgumentParser(prog="just faults", description=__doc__.splitlines()[0])
    parser.add_argument("--schedule", action="append", choices=list(SCHEDULES), help="default: all")
    parser.add_argument("--seconds", type=float, default=30.0, help="how long each fault lasts")
    parser.add_argument(
        "--sync",
        choices=("default", "always"),
        default="default",
        help="nats-server's sync_interval: its default (fsync every 2 minutes), or always (durable mode)",
    )
    args = parser.parse_args()
    names = args.schedule or list(SCHEDULES)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per request would bury the table
    print(f"nats-server sync_interval: {'always' if args.sync == 'always' else '2m (the default)'}")
    print(Row.HEADER, flush=True)
    directory = Path(tempfile.mkdtemp(prefix="hourglass-faults-"))
    rows = asyncio.run(run(names, args.seconds, directory, sync_always=args.sync == "always"))
    bad = [row for row in rows if not row.ok]
    if bad:
        print(f"logs of every node kept in {directory}")
    else:
        shutil.rmtree(directory, ignore_errors=True)
    for row in bad:
        for read in row.bad_reads[:5]:
            print(f"  {row.schedule}: {read}")
        if row.audit != "clean":
            print(f"  {row.schedule}: audit {row.audit[:2000]}")
        if not row.nodes_agree and row.digests:
            print(f"  {row.schedule}: digests {row.digests}")
    raise SystemExit(1 if bad else 0)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
