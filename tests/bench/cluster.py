"""`./just bench-cluster`: one generated stream projected into one Valkey node, then into Valkey clusters
of 2 and 3 primaries (formed by deploy.valkey_cluster), then GET and range latency through the real
HTTP server against each, in one run.

Every target gets the same stream from a cold start (its Redis empty, snapshots off), by the same
number of projector processes; Redis CPU is summed over the target's primaries from /proc. The
latency rounds send each read back to back on one connection by default, so they measure a request's
own time, not a queue: a cached GET is served from the worker's hour cache, an uncached
one from a server whose ANALYTICS_READ_STALENESS_S is 0 (every GET reads Redis).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import redis as redis_lib

from contract.hours import HOUR_MS, system_now_ms
from deploy.redis_nodes import parse_redis_nodes
from deploy.settings import Settings
from tests.bench.run import (
    WrkResult,
    cpu,
    ensure_wrk,
    fill_stream,
    process,
    run_wrk,
    wait_applied,
    wait_http,
)
from tests.bench.servers import scratch_servers
from tests.helpers import settings_env
from tests.integration.valkey_cluster import ValkeyCluster, running_cluster
from tests.ports import free_port


@dataclass(frozen=True)
class Target:
    name: str
    primaries: int
    projector_url: str
    api_url: str
    admin_url: str
    pids: tuple[int, ...]
    """The primaries' valkey-server processes."""


@dataclass
class Applied:
    seconds: float
    python_s: float
    nats_s: float
    redis_s: float


READS = {
    "GET current hour, cached": "/analytics?timestamp={now}",
    "GET current hour, uncached": "/analytics?timestamp={now}",
    "range, 24 hours by hour": "/analytics?from={day_ago}&to={now}",
    "range, 30 days by day": "/analytics?from={month_ago}&to={now}&granularity=day",
}


def main(argv: list[str] | None = None, prog: str = "./just bench-cluster") -> None:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--per-message", type=float, default=6.0, help="mean events a message")
    parser.add_argument("--keyed", type=float, default=0.1, help="share of events with an Idempotency-Key")
    parser.add_argument("--partitions", type=int, default=12, help="ANALYTICS_PARTITIONS of the stream")
    parser.add_argument("--redis-primaries", type=int, nargs="+", default=[1, 2, 3], help="1 is one node")
    parser.add_argument(
        "--rounds", type=int, default=3, help="rounds of applying the stream into each target"
    )
    parser.add_argument("--projectors", type=int, default=2, help="projector processes for every target")
    parser.add_argument(
        "--connections", type=int, default=1, help="wrk connections of each latency round (back to back)"
    )
    parser.add_argument("--seconds", type=int, default=10, help="duration of one latency round")
    parser.add_argument("--no-reads", action="store_true", help="applies only (./just bench-projector)")
    args = parser.parse_args(argv)
    args.prog = prog
    wrk = None if args.no_reads else ensure_wrk()
    with scratch_servers("hourglass-cluster-") as scratch, contextlib.ExitStack() as stack:
        settings = scratch.settings.replace(partitions=args.partitions, snapshot_interval_s=0.0)
        targets = [
            _target(stack, scratch.workdir, scratch.redis_pid, settings, n, args.partitions)
            for n in args.redis_primaries
        ]
        env = settings_env(settings)
        log = scratch.workdir / "log"
        subprocess.run(
            [sys.executable, "-m", "projector", "stream"], env=env, check=True, capture_output=True
        )
        asyncio.run(fill_stream(settings, args.events, args.per_message, args.keyed))
        applied: dict[str, list[Applied]] = {t.name: [] for t in targets}
        for r in range(args.rounds):  # the order rotates, so no target always runs first
            for t in targets[r % len(targets) :] + targets[: r % len(targets)]:
                applied[t.name].append(_apply(t, settings, args.projectors, scratch.nats_pid, log))
        latency = {
            t.name: _reads(wrk, t, settings, args.connections, args.seconds, scratch.workdir)
            for t in targets
            if wrk is not None
        }
    _print(args, targets, applied, latency)


def _target(
    stack: contextlib.ExitStack, workdir: Path, redis_pid: int, settings: Settings, primaries: int, parts: int
) -> Target:
    if primaries == 1:
        url = settings.redis_url
        return Target("one node", 1, url, url, url, (redis_pid,))
    cluster: ValkeyCluster = stack.enter_context(
        running_cluster(workdir / f"cluster{primaries}", primaries=primaries, replicas=0, partitions=parts)
    )
    pids = tuple(cluster.procs[port].pid for port in cluster.ports)
    return Target(
        f"{primaries} primaries",
        primaries,
        cluster.role_url("projector"),
        cluster.role_url("api"),
        cluster.url,
        pids,
    )


def _flush(target: Target) -> None:
    for node in parse_redis_nodes(target.admin_url):
        client = redis_lib.Redis(
            host=node.host, port=node.port, username=node.username, password=node.password
        )
        client.flushall()
        client.close()


def _apply(target: Target, settings: Settings, projectors: int, nats_pid: int, log: Path) -> Applied:
    """The whole stream into the target's empty Redis by `projectors` processes from a cold start."""
    _flush(target)
    env = settings_env(settings.replace(redis_url=target.projector_url))
    before = cpu(nats_pid, *target.pids)
    started = time.perf_counter()
    with contextlib.ExitStack() as running:
        for _ in range(projectors):
            running.enter_context(process([sys.executable, "-m", "projector", "run"], env, log))
        asyncio.run(wait_applied(settings.replace(redis_url=target.admin_url)))
        seconds = time.perf_counter() - started
    after = cpu(nats_pid, *target.pids)
    python_s, nats_s, *redis = (b - a for a, b in zip(before, after, strict=True))
    print(f"  applied into {target.name} in {seconds:.1f} s", flush=True)
    return Applied(seconds, python_s, nats_s, sum(redis))


@contextlib.contextmanager
def _server(settings: Settings, log: Path) -> Iterator[str]:
    with process([sys.executable, "-m", "server"], settings_env(settings), log):
        url = f"http://127.0.0.1:{settings.http_port}"
        wait_http(url, "/analytics?timestamp=0")  # /readyz also wants a projector: none runs here
        yield url


def _reads(
    wrk: str, target: Target, settings: Settings, connections: int, seconds: int, workdir: Path
) -> dict[str, tuple[WrkResult, float]]:
    """Each read of READS, back to back on `connections` connections, through one HTTP worker."""
    now = system_now_ms()
    values = {"now": now, "day_ago": now - 24 * HOUR_MS, "month_ago": now - 30 * 24 * HOUR_MS}
    out: dict[str, tuple[WrkResult, float]] = {}
    log = workdir / "log"
    base = settings.replace(redis_url=target.api_url, http_workers=1)
    with tempfile.TemporaryDirectory(dir=workdir) as tmp_s:
        for i, (read, path) in enumerate(READS.items()):
            staleness = 0.0 if "uncached" in read else settings.read_staleness_s
            own = base.replace(http_port=free_port(), read_staleness_s=staleness)
            script = Path(tmp_s) / f"read{i}.lua"
            script.write_text(f'wrk.method = "GET"\nwrk.path = "{path.format(**values)}"\n')
            with _server(own, log) as url:
                run_wrk(wrk, url, script, 2, connections=connections)  # warm up
                before = sum(cpu(*target.pids)[1:])
                got = run_wrk(wrk, url, script, seconds, connections=connections)
                redis_us = (sum(cpu(*target.pids)[1:]) - before) / max(got.ok, 1) * 1e6
            out[read] = (got, redis_us)
            failed = f", {got.failures} failed" if got.failures else ""
            print(
                f"  {target.name}, {read}: p50 {got.p50_ms:.2f} ms, p99 {got.p99_ms:.2f} ms "
                f"at {got.rps:,.0f} req/s, Redis {redis_us:.0f} µs a request{failed}",
                flush=True,
            )
    return out


def _print(
    args: argparse.Namespace,
    targets: list[Target],
    applied: dict[str, list[Applied]],
    latency: dict[str, dict[str, tuple[WrkResult, float]]],
) -> None:
    cores = os.cpu_count() or 1
    n = args.events
    print(f"`{args.prog} {' '.join(sys.argv[1:])}` on {cores} cores, load {os.getloadavg()[0]:.2f}")
    print(
        f"{n:,} events, {args.per_message:g} a message on average, {args.keyed:.0%} keyed, "
        f"{args.partitions} partitions, {args.projectors} projector processes for every target:"
    )
    one = next((t for t in targets if t.primaries == 1), targets[0])
    print(
        f"| Redis | events/s, each round | median | vs {one.name} | CPU per event (medians): projectors "
        f"| nats-server | Redis (all primaries) | Redis vs {one.name} |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    rate = {t.name: statistics.median(n / a.seconds for a in applied[t.name]) for t in targets}
    per = {
        (t.name, what): statistics.median(getattr(a, what) / n * 1e6 for a in applied[t.name])
        for t in targets
        for what in ("python_s", "nats_s", "redis_s")
    }
    for t in targets:
        rounds = ", ".join(f"{n / a.seconds:,.0f}" for a in applied[t.name])
        print(
            f"| {t.name} | {rounds} | {rate[t.name]:,.0f} | {rate[t.name] / rate[one.name]:.2f}x | "
            f"{per[t.name, 'python_s']:.2f} µs | {per[t.name, 'nats_s']:.2f} µs | "
            f"{per[t.name, 'redis_s']:.2f} µs | {per[t.name, 'redis_s'] / per[one.name, 'redis_s']:.2f}x |"
        )
    if not latency:
        return
    print(
        f"\nLatency through one HTTP worker, wrk -t1 -c{args.connections} back to back, "
        f"{args.seconds} s a round (p50 / p99 in ms; req/s; Redis CPU a request, all primaries):"
    )
    print("| read | " + " | ".join(t.name for t in targets) + " |")
    print("| --- |" + " --- |" * len(targets))
    for read in READS:
        cells = [latency[t.name][read] for t in targets]
        print(
            f"| {read} | "
            + " | ".join(f"{c.p50_ms:.2f} / {c.p99_ms:.2f}; {c.rps:,.0f}/s; {us:.0f} µs" for c, us in cells)
            + " |"
        )


if __name__ == "__main__":
    main()
