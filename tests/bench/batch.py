"""`./just bench-batch`: events a second through `POST /analytics/batch` (1,000-event batches) against
single POSTs, one HTTP worker, in alternating rounds of the same run, with the CPU each engine spent per
event (the HTTP worker, nats-server, the projector, Redis) and how long the projector took to catch up
after each round."""

from __future__ import annotations

import argparse
import asyncio
import gzip
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import nats

from contract.hours import system_now_ms
from deploy.projections_client import connect
from deploy.settings import Settings
from tests.bench.run import POST_LUA, cpu, ensure_wrk, process, run_wrk, wait_http
from tests.bench.servers import scratch_servers
from tests.bench.tail import _child_of
from tests.helpers import lagging, settings_env
from tests.ports import free_port

BATCH_LUA = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/x-ndjson"
local bodies = {}
local now = {now}
for b = 1, 8 do
  local lines = {}
  for i = 1, {size} do
    local n = b * {size} + i
    local ts = now
    if n % 20 == 0 then ts = now - 3600000 * (1 + n % 5) end
    local kind = "impression"
    if n % 3 == 0 then kind = "click" end
    lines[i] = '{"timestamp":' .. ts .. ',"user":"u' .. (n * 7919 % 100000) .. '","event":"' .. kind .. '"}'
  end
  bodies[b] = table.concat(lines, "\\n") .. "\\n"
end
local k = 0
request = function()
  k = k + 1
  return wrk.format(nil, "/analytics/batch", nil, bodies[k % 8 + 1])
end
"""


@dataclass
class Round:
    events_per_s: float
    cpu_us: dict[str, float]
    """CPU microseconds per event of each engine."""
    catch_up_s: float
    """From the end of the load until the projector had applied the whole stream."""


async def _caught_up(settings: Settings, timeout: float = 300) -> float:
    started = time.monotonic()
    nc = await nats.connect(**settings.nats_options("bench-batch"))
    redis = connect(settings)
    try:
        while await lagging(nc, redis, settings):
            if time.monotonic() - started > timeout:
                raise RuntimeError(f"the projector did not catch up within {timeout} s")
            await asyncio.sleep(0.05)
    finally:
        await nc.close()
        await redis.aclose()
    return time.monotonic() - started


def _round(
    wrk: str,
    url: str,
    script: Path,
    seconds: int,
    connections: int,
    per_request: int,
    pids: dict[str, int],
    settings: Settings,
) -> Round:
    before = cpu(*pids.values())[1:]
    result = run_wrk(wrk, url, script, seconds, connections=connections)
    catch_up = asyncio.run(_caught_up(settings))
    used = [b - a for a, b in zip(before, cpu(*pids.values())[1:], strict=True)]
    if result.failures:
        raise RuntimeError(f"{result.failures} requests failed: the numbers would not be comparable")
    events = result.ok * per_request
    return Round(
        result.rps * per_request,
        {name: seconds_used * 1e6 / events for name, seconds_used in zip(pids, used, strict=True)},
        catch_up,
    )


def main() -> None:
    parser = argparse.ArgumentParser(prog="./just bench-batch", description=__doc__)
    parser.add_argument("--seconds", type=int, default=8, help="each round's load")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of each kind, alternating")
    parser.add_argument("--size", type=int, default=1000, help="events a batch")
    parser.add_argument(
        "--import-events", type=int, default=1_000_000, help="events in the imported file (0: none)"
    )
    args = parser.parse_args()
    wrk = ensure_wrk()
    with scratch_servers("hourglass-batch-") as scratch:
        settings = scratch.settings.replace(http_port=free_port(), http_workers=1)
        env, log = settings_env(settings), scratch.workdir / "log"
        subprocess.run(
            [sys.executable, "-m", "projector", "stream"],
            env=env,
            check=True,
            timeout=60,
            capture_output=True,
        )
        now = system_now_ms()
        single = scratch.workdir / "post.lua"
        single.write_text(POST_LUA.replace("{now}", str(now)))
        batch = scratch.workdir / "batch.lua"
        batch.write_text(BATCH_LUA.replace("{now}", str(now)).replace("{size}", str(args.size)))
        url = f"http://127.0.0.1:{settings.http_port}"
        with (
            process([sys.executable, "-m", "server"], env, log) as server,
            process([sys.executable, "-m", "projector", "run"], env, log) as projector,
        ):
            wait_http(url, "/readyz")
            run_wrk(wrk, url, single, 2)  # warm both paths up
            run_wrk(wrk, url, batch, 2, connections=4)
            asyncio.run(_caught_up(settings))
            pids = {
                "HTTP worker": _child_of(server.pid),
                "nats-server": scratch.nats_pid,
                "projector": projector.pid,
                "Redis": scratch.redis_pid,
            }
            singles, batches = [], []
            for _ in range(args.rounds):
                singles.append(_round(wrk, url, single, args.seconds, 64, 1, pids, settings))
                batches.append(_round(wrk, url, batch, args.seconds, 4, args.size, pids, settings))
            imported = (
                _import(scratch.workdir, args.import_events, url, env, pids, settings)
                if args.import_events
                else None
            )
    print(_table(singles, batches, args))
    if imported is not None:
        cpu_line = ", ".join(f"{name} {us:.1f}" for name, us in imported.cpu_us.items() if name != "import")
        print(
            f"\n./just import of {args.import_events:,} events (NDJSON, gzip): {imported.events_per_s:,.0f} "
            f"events/s end to end, the projector {imported.catch_up_s:.2f} s behind at the end; "
            f"CPU µs per event: {cpu_line}, the import itself {imported.cpu_us['import']:.1f}"
        )


def _import(
    workdir: Path, count: int, url: str, env: dict[str, str], pids: dict[str, int], settings: Settings
) -> Round:
    """`python -m ingest import` of a generated file of `count` events (a day of history, 40k users)."""
    now = system_now_ms()
    day_ago = now - 24 * 3_600_000
    path = workdir / "history.ndjson.gz"
    with gzip.open(path, "wt") as out:
        for n in range(count):
            kind = "click" if n % 3 == 0 else "impression"
            ts, user = day_ago + n * 86_400_000 // count, f"h{n * 7919 % 40_000}"
            out.write(f'{{"timestamp":{ts},"user":"{user}","event":"{kind}"}}\n')
    before = cpu(*pids.values())
    started = time.monotonic()
    subprocess.run(
        [sys.executable, "-m", "ingest", "import", str(path), "--url", url],
        env=env,
        check=True,
        capture_output=True,
    )
    elapsed = time.monotonic() - started
    catch_up = asyncio.run(_caught_up(settings))
    after = cpu(*pids.values())
    used = {name: b - a for name, a, b in zip(pids, before[1:], after[1:], strict=True)}
    used["import"] = after[0] - before[0]
    return Round(count / elapsed, {name: s * 1e6 / count for name, s in used.items()}, catch_up)


def _table(singles: list[Round], batches: list[Round], args: argparse.Namespace) -> str:
    def med(rounds: list[Round], pick: str) -> float:
        if pick == "rate":
            return statistics.median(r.events_per_s for r in rounds)
        if pick == "catch":
            return statistics.median(r.catch_up_s for r in rounds)
        return statistics.median(r.cpu_us[pick] for r in rounds)

    engines = list(singles[0].cpu_us)
    rows = [
        f"| | single POSTs (64 connections) | batches of {args.size} (4 connections) | batch / single |",
        "| --- | --- | --- | --- |",
        f"| events/s (median of {args.rounds} rounds of {args.seconds} s) | {med(singles, 'rate'):,.0f} | "
        f"{med(batches, 'rate'):,.0f} | {med(batches, 'rate') / med(singles, 'rate'):.1f}x |",
    ]
    rows += [
        f"| {name}, CPU µs per event | {med(singles, name):.1f} | {med(batches, name):.1f} | "
        f"{med(batches, name) / med(singles, name):.2f}x |"
        for name in engines
    ]
    catch = (med(singles, "catch"), med(batches, "catch"))
    rows.append(f"| projector catch-up after the round | {catch[0]:.2f} s | {catch[1]:.2f} s | |")
    return "\n".join(rows)


if __name__ == "__main__":
    main()
