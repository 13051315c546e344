"""`./just bench-projector`: projector processes, then `./just replay`, on a generated stream.

Run it at two commits to compare them on the same machine, minutes apart, e.g. the lean pull reader
against nats-py's fetch: `./just bench-projector` here and at the commit before it. For the replay,
`--base REV` does that in one run, in alternating rounds (tests/bench/replay_commits.py).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import subprocess
import sys
import time

import redis as redis_lib

from tests.bench import cluster as cluster_bench
from tests.bench.replay_commits import replay_rounds
from tests.bench.run import cpu, fill_stream, peak_rss_mb, process, wait_applied
from tests.bench.servers import scratch_servers
from tests.bench.wait_rounds import wait_rounds
from tests.helpers import settings_env


def main() -> None:
    parser = argparse.ArgumentParser(prog="./just bench-projector", description=__doc__)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--per-message", type=float, default=6.0, help="mean events a message")
    parser.add_argument("--keyed", type=float, default=0.1, help="share of events with an Idempotency-Key")
    parser.add_argument(
        "--dimensions",
        action="store_true",
        help="events carry a campaign (of 1,000), a creative (10 per campaign) and a site (of 500)",
    )
    parser.add_argument(
        "--projectors", type=int, default=1, help="projector processes (they share the partitions)"
    )
    parser.add_argument(
        "--replay-processes",
        type=int,
        nargs="*",
        default=[0],
        help="ANALYTICS_REPLAY_PROCESSES of each replay, run in turn (e.g. 1 2 1 2 for an A/B)",
    )
    parser.add_argument(
        "--pull-reader",
        choices=("auto", "fast", "public"),
        default="auto",
        help="ANALYTICS_PULL_READER of the projectors and replays (public: nats-py's public API only)",
    )
    parser.add_argument(
        "--wait-replicas",
        type=int,
        nargs="*",
        default=[],
        help="then give Valkey a replica and apply the stream again with ANALYTICS_REDIS_WAIT_REPLICAS "
        "set to each value in turn (e.g. 0 1 0 1)",
    )
    parser.add_argument(
        "--redis-primaries",
        type=int,
        nargs="+",
        help="instead: the stream applied into one Valkey node (1) and clusters of N primaries, same run "
        "(the applies of ./just bench-cluster; its other options pass through)",
    )
    parser.add_argument(
        "--base",
        help="instead: ./just replay of this commit against this checkout's on the same stream, in "
        "alternating rounds (the first --replay-processes value; no projector run)",
    )
    parser.add_argument(
        "--against-no-dimensions",
        action="store_true",
        help="instead: ./just replay of this checkout with ANALYTICS_DIMENSIONS empty against with them "
        "declared, on the same stream, in alternating rounds (use with --dimensions)",
    )
    parser.add_argument("--rounds", type=int, default=4, help="rounds of each side with --base")
    args, rest = parser.parse_known_args()
    if args.redis_primaries:
        primaries = [str(n) for n in args.redis_primaries]
        passed = ["--events", str(args.events), "--projectors", str(args.projectors)]
        passed += ["--per-message", str(args.per_message), "--keyed", str(args.keyed)]
        cluster_bench.main(
            [*rest, *passed, "--redis-primaries", *primaries, "--no-reads"],
            prog="./just bench-projector",
        )
        return
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    with scratch_servers("hourglass-projector-") as scratch:
        tmp, settings = scratch.workdir, scratch.settings
        log = tmp / "log"
        env = {**settings_env(settings), "ANALYTICS_PULL_READER": args.pull_reader}
        servers = (scratch.nats_pid, scratch.redis_pid)
        subprocess.run(
            [sys.executable, "-m", "projector", "stream"], env=env, check=True, capture_output=True
        )
        asyncio.run(fill_stream(settings, args.events, args.per_message, args.keyed, args.dimensions))
        if args.base or args.against_no_dimensions:
            plain = {"ANALYTICS_DIMENSIONS": ""} if args.against_no_dimensions else None
            processes = args.replay_processes[0]
            replay_rounds(scratch, env, args.base, args.rounds, processes, args.events, plain)
            return
        started, before = time.perf_counter(), cpu(*servers)
        with contextlib.ExitStack() as running:
            pids = [
                running.enter_context(process([sys.executable, "-m", "projector", "run"], env, log)).pid
                for _ in range(args.projectors)
            ]
            asyncio.run(wait_applied(settings))
            peaks = [peak_rss_mb(pid) for pid in pids]
        projector_s = time.perf_counter() - started
        used = {"projector": spent(before, cpu(*servers))}
        replays = []
        redis = redis_lib.Redis.from_url(settings.redis_url)
        for processes in args.replay_processes:
            redis.config_resetstat()
            started, before = time.perf_counter(), cpu(*servers)
            replayed = subprocess.run(
                [sys.executable, "-m", "projector", "replay"],
                env={**env, "ANALYTICS_REPLAY_PROCESSES": str(processes)},
                capture_output=True,
                text=True,
                check=True,
            )
            replays.append((processes, time.perf_counter() - started))
            used[f"replay, ANALYTICS_REPLAY_PROCESSES={processes}"] = spent(before, cpu(*servers))
            commands = redis.info("commandstats")
        redis.close()
        if args.wait_replicas:
            wait_rounds(scratch, env, args.events, args.wait_replicas, cpu)
    print(replayed.stdout.strip().splitlines()[-1])
    print(
        f"{args.events:,} events, {args.per_message:g} a message on average, {args.keyed:.0%} keyed, "
        f"pull reader {args.pull_reader}:"
    )
    who = f"{args.projectors} projector processes" if args.projectors > 1 else "one projector process"
    print(f"  {who} from a cold start: {args.events / projector_s:,.0f} events/s ({projector_s:.1f} s)")
    print(f"  peak RSS (VmHWM) of each projector process: {', '.join(f'{mb:.0f} MiB' for mb in peaks)}")
    for processes, replay_s in replays:
        how = f"ANALYTICS_REPLAY_PROCESSES={processes}"
        print(f"  ./just replay, {how}: {args.events / replay_s:,.0f} events/s ({replay_s:.1f} s)")
    cores = os.cpu_count() or 1
    print(f"CPU per event (user + system), and what it allows on {cores} cores with nothing else running:")
    for name, (python_s, nats_s, redis_s) in used.items():
        total = (python_s + nats_s + redis_s) / args.events * 1e6
        print(
            f"  {name}: Python {python_s / args.events * 1e6:.2f} µs, nats-server "
            f"{nats_s / args.events * 1e6:.2f} µs, Redis {redis_s / args.events * 1e6:.2f} µs; "
            f"{total:.2f} µs in all: at most {cores / total * 1e6:,.0f} events/s"
        )
    # Which commands Redis spent it on, in the last replay (calls from inside the apply script
    # are counted both on their own and within EVALSHA).
    busiest = sorted(commands.items(), key=lambda item: -item[1]["usec"])[:5]
    print(
        "Redis time in the last replay, per event: "
        + ", ".join(
            f"{name.removeprefix('cmdstat_').upper()} {stats['usec'] / args.events * 1000:.0f} ns"
            f" ({stats['calls']:,} calls)"
            for name, stats in busiest
        )
    )


def spent(before: tuple[float, ...], after: tuple[float, ...]) -> tuple[float, float, float]:
    python_s, nats_s, redis_s = (b - a for a, b in zip(before, after, strict=True))
    return python_s, nats_s, redis_s


if __name__ == "__main__":
    main()
