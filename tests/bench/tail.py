"""`./just bench-tail`: one Hourglass under a paced POST load, and where the machine's CPU went meanwhile
(the HTTP worker, the projector, nats-server, Redis, and time stolen by the hypervisor), to tell a
latency tail made by a busy machine from one made by the load's shape."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

from contract.hours import system_now_ms
from tests.bench.run import (
    PACED_CONNECTIONS,
    POST_LUA,
    cpu,
    ensure_wrk,
    pace,
    peak_rss_mb,
    process,
    pss_mb,
    run_wrk,
    wait_http,
)
from tests.bench.servers import scratch_servers
from tests.helpers import settings_env
from tests.ports import free_port


def main() -> None:
    parser = argparse.ArgumentParser(prog="./just bench-tail", description=__doc__)
    parser.add_argument("--rate", type=float, default=4000, help="POSTs a second offered")
    parser.add_argument("--seconds", type=int, default=12)
    args = parser.parse_args()
    wrk = ensure_wrk()
    with scratch_servers("hourglass-tail-") as scratch:
        settings = scratch.settings.replace(http_port=free_port(), http_workers=1)
        env, log = settings_env(settings), scratch.workdir / "log"
        subprocess.run(
            [sys.executable, "-m", "projector", "stream"],
            env=env,
            check=True,
            timeout=60,
            capture_output=True,
        )
        script = scratch.workdir / "post.lua"
        script.write_text(POST_LUA.replace("{now}", str(system_now_ms())))
        url = f"http://127.0.0.1:{settings.http_port}"
        with (
            process([sys.executable, "-m", "server"], env, log) as server,
            process([sys.executable, "-m", "projector", "run"], env, log) as projector,
        ):
            wait_http(url, "/readyz")
            run_wrk(wrk, url, script, 3)
            paced = pace(wrk, url, script, args.rate, scratch.workdir / "paced.lua")
            names = ["HTTP worker", "projector", "nats-server", "Redis"]
            pids = [_child_of(server.pid), projector.pid, scratch.nats_pid, scratch.redis_pid]
            before, stolen = cpu(*pids)[1:], _steal()
            started = time.monotonic()
            result = run_wrk(wrk, url, paced, args.seconds, connections=PACED_CONNECTIONS)
            elapsed = time.monotonic() - started
            used = [b - a for a, b in zip(before, cpu(*pids)[1:], strict=True)]
            steal = _steal()
            peaks = [peak_rss_mb(pid) for pid in (*pids[:2], server.pid)]
            together = pss_mb(pids[0]) + pss_mb(server.pid)
    print(f"paced POSTs: {result.rps:,.0f} req/s, p50 {result.p50_ms:.2f} ms, p99 {result.p99_ms:.2f} ms")
    print(f"CPU meanwhile, of {os.cpu_count()} cores:")
    for name, seconds in zip(names, used, strict=True):
        print(f"  {name}: {seconds / elapsed:.0%} of a core")
    print(
        f"  stolen by the hypervisor: {(steal[0] - stolen[0]) / (steal[1] - stolen[1]):.1%} of all CPU time"
    )
    worker, projector_mb, main = peaks
    print(f"Peak RSS (VmHWM): HTTP worker {worker:.0f} MiB and its granian main process {main:.0f} MiB,")
    print(f"  projector {projector_mb:.0f} MiB; the HTTP server's two processes now, PSS: {together:.0f} MiB")


def _child_of(pid: int) -> int:
    """The granian worker under `python -m server`."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                return int(stat.parent.name)
        except (OSError, ValueError, IndexError):
            continue
    raise RuntimeError(f"no worker under pid {pid}")


def _steal() -> tuple[int, int]:
    """(ticks stolen, all ticks) since boot, over every core."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    return values[7], sum(values)


if __name__ == "__main__":
    main()
