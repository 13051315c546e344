"""`./just bench-projector --base REV`: `./just replay` of another commit against this checkout's, on
one generated stream, in alternating rounds; prints each round, each side's median rate and the ratio.

Both replays read the same stream from the same nats-server into the same valkey-server, emptied
(FLUSHALL) before every round, so each starts where a first replay does; the order of the two flips
every round, so both share the machine's noise. The other commit is checked out with `git worktree`
into a temporary directory and imported from there (`PYTHONPATH`), with this checkout's virtualenv, as
`./just bench-commits` does for the HTTP server. A rate is the events over the wall time of the whole
`python -m projector replay` process, start-up included, as `./just bench-projector` measures it;
one untimed replay of each side comes first.
"""

from __future__ import annotations

import contextlib
import statistics
import subprocess
import sys
import time
from pathlib import Path

import redis as redis_lib

from deploy.servers import ROOT
from tests.bench.commits import checkout, tree_env
from tests.bench.run import cpu
from tests.bench.servers import Scratch


def replay_rounds(
    scratch: Scratch,
    env: dict[str, str],
    base: str | None,
    rounds: int,
    processes: int,
    events: int,
    base_env: dict[str, str] | None = None,
) -> None:
    """`rounds` pairs of replays, `base`'s and this checkout's, alternating which goes first; with no
    `base`, this checkout's twice, the base side with `base_env` added (e.g. no dimensions)."""
    redis = redis_lib.Redis.from_url(scratch.settings.redis_url)
    rates: dict[str, list[float]] = {"base": [], "head": []}
    shares: dict[str, list[tuple[float, float, float]]] = {"base": [], "head": []}
    servers = (scratch.nats_pid, scratch.redis_pid)
    # Each replay is a new interpreter (three, with build processes): compiling every module from
    # source each time (PYTHONDONTWRITEBYTECODE) would weigh about a second a process, which no
    # installed deployment pays; so bytecode is written, by one untimed replay of each side first.
    env = {k: v for k, v in env.items() if k != "PYTHONDONTWRITEBYTECODE"}
    envs = {"base": {**env, **(base_env or {})}, "head": env}
    with checkout(base) if base else contextlib.nullcontext(ROOT) as base_tree:
        trees = {"base": base_tree, "head": ROOT}
        for name, tree in trees.items():
            redis.flushall()
            _replay(tree, {**envs[name], "ANALYTICS_REPLAY_PROCESSES": str(processes)})
        for r in range(rounds):
            for name in ("base", "head") if r % 2 == 0 else ("head", "base"):
                redis.flushall()
                started, before = time.perf_counter(), cpu(*servers)
                _replay(trees[name], {**envs[name], "ANALYTICS_REPLAY_PROCESSES": str(processes)})
                took = time.perf_counter() - started
                used = [(b - a) / events * 1e6 for a, b in zip(before, cpu(*servers), strict=True)]
                rates[name].append(events / took)
                shares[name].append((used[0], used[1], used[2]))
                print(
                    f"  round {r + 1} {name:4} {events / took:>9,.0f} events/s ({took:.2f} s); CPU per "
                    f"event: Python {used[0]:.2f} µs, nats-server {used[1]:.2f} µs, Redis {used[2]:.2f} µs",
                    flush=True,
                )
    redis.close()
    head = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], text=True, capture_output=True
    )
    med = {name: statistics.median(found) for name, found in rates.items()}
    against = base or " ".join(f"{k}={v!r}" for k, v in (base_env or {}).items())
    print(
        f"./just replay, ANALYTICS_REPLAY_PROCESSES={processes}, {events:,} events, medians of {rounds} "
        f"alternating rounds: base {against} {med['base']:,.0f} events/s, this checkout "
        f"({head.stdout.strip()}, uncommitted changes included) {med['head']:,.0f} events/s, "
        f"head/base {med['head'] / med['base']:.3f}"
    )
    for name, found in shares.items():
        python, nats, valkey = (statistics.median(x[i] for x in found) for i in range(3))
        print(
            f"  {name}: median CPU per event: Python {python:.2f} µs, nats-server {nats:.2f} µs, "
            f"Redis {valkey:.2f} µs"
        )


def _replay(tree: Path, env: dict[str, str]) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "projector", "replay"],
        env=tree_env(tree, env) if tree != ROOT else env,
        cwd=tree,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        print(done.stdout[-3000:], done.stderr[-3000:], file=sys.stderr)
        done.check_returncode()
