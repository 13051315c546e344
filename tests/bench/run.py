"""`./just bench`: Hourglass against a bare Litestar app on the same server, driven by wrk, in one run.

Starts its own nats-server, valkey-server, Hourglass (1 HTTP worker + 1 projector) and the bare app
on free ports; alternates wrk rounds between them; measures latency at half the peak, freshness,
projector throughput, replay time and worker RSS; prints one table and writes docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import platform
import random
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import nats

from contract import schema
from contract.hours import HOUR_MS, hour_of, partition_of, subject, system_now_ms
from contract.keys import Keys
from deploy.credentials import nats_auth_config, prepare, write_secret
from deploy.projections_client import connect
from deploy.servers import NATS_CONF, ROOT, durable_nats_conf, nats_command, valkey_command, wait_for_port
from deploy.settings import Settings
from projector.log.stream_config import ensure_stream
from tests.helpers import settings_env
from tests.ports import free_port

POST_LUA = """
wrk.method = "POST"
local n = 0
local now = {now}
request = function()
  n = n + 1
  local ts = now
  if n % 20 == 0 then ts = now - 3600000 * (1 + n % 5) end
  local kind = "impression"
  if n % 3 == 0 then kind = "click" end
  return wrk.format(nil, "/analytics?timestamp=" .. ts .. "&user=u" .. (n % 100000) .. "&" .. kind)
end
"""
GET_LUA = """
wrk.method = "GET"
wrk.path = "/analytics?timestamp={now}"
"""
RANGE_LUA = """
wrk.method = "GET"
wrk.path = "/analytics?from={start}&to={now}"
"""
RANGE_RPS = 200
"""Range reads are a dashboard's, not a tracker's: their latency is measured at a modest, steady rate."""
PACED_LUA = """
delay = function() return {delay_ms} end
"""


@dataclass
class WrkResult:
    rps: float
    """Successful (2xx/3xx) responses a second."""
    p50_ms: float
    p99_ms: float
    failures: int = 0
    """Non-2xx/3xx responses plus wrk's socket errors (connect, read, write) and timeouts."""
    ok: int = 0
    """Successful responses in all."""


def ensure_wrk() -> str:
    found = shutil.which("wrk")
    if found:
        return found
    print("wrk not found; installing it from Debian (apt-get install wrk) ...", flush=True)
    subprocess.run(["apt-get", "update", "-qq"], check=True)
    subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=True)
    return shutil.which("wrk") or "wrk"


def run_wrk(wrk: str, url: str, script: Path, seconds: int, connections: int = 64) -> WrkResult:
    out = subprocess.run(
        [wrk, "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script), url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return parse_wrk(out)


def parse_wrk(out: str) -> WrkResult:
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    found = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    bad = int(found.group(1)) if found else 0
    sockets = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    failures = bad + (sum(int(n) for n in sockets.groups()) if sockets else 0)
    ok_rps = rps * (requests - bad) / requests if requests else 0.0
    return WrkResult(ok_rps, _latency(out, "50%"), _latency(out, "99%"), failures, requests - bad)


def _latency(out: str, pct: str) -> float:
    value, unit = re.search(rf"{pct}\s+([\d.]+)(us|ms|s)", out).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


PACED_CONNECTIONS = 32


def pace(wrk: str, url: str, script: Path, target_rps: float, out: Path) -> Path:
    """A script whose connections pause between requests so that wrk offers about `target_rps`.

    wrk's delay() is in whole milliseconds and adds to each request's own latency, so the delay is
    calibrated with two short runs rather than computed once.
    """
    delay = PACED_CONNECTIONS * 1000 / target_rps
    for _ in range(2):
        out.write_text(script.read_text() + PACED_LUA.replace("{delay_ms}", str(max(1, round(delay)))))
        achieved = run_wrk(wrk, url, out, 2, connections=PACED_CONNECTIONS).rps
        delay = max(1.0, delay * achieved / target_rps)
    out.write_text(script.read_text() + PACED_LUA.replace("{delay_ms}", str(max(1, round(delay)))))
    return out


@contextmanager
def process(
    argv: list[str], env: dict[str, str] | None, log: Path, cwd: Path = ROOT
) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(argv, env=env, cwd=cwd, stdout=log.open("ab"), stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()


def wait_http(url: str, path: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + path, timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{url}{path} not ready")


def worker_rss_mb(granian_pid: int) -> float:
    """The largest RSS among the granian process's children (its workers)."""
    best = 0.0
    for child in Path(f"/proc/{granian_pid}/task").glob("*/children"):
        for pid in child.read_text().split():
            status = Path(f"/proc/{pid}/status").read_text()
            kb = int(re.search(r"VmRSS:\s+(\d+)", status).group(1))  # type: ignore[union-attr]
            best = max(best, kb / 1024)
    return best


def peak_rss_mb(pid: int) -> float:
    """The process's peak resident memory so far (VmHWM), in MiB: what a memory limit must leave room for."""
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+)", status).group(1)) / 1024  # type: ignore[union-attr]


def pss_mb(pid: int) -> float:
    """The process's proportional share of resident memory now, in MiB: pages shared with a forked
    parent or child count half in each, so the figures of a process tree add up to what it uses."""
    rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
    return int(re.search(r"^Pss:\s+(\d+)", rollup, re.M).group(1)) / 1024  # type: ignore[union-attr]


async def freshness(url: str, samples: int) -> list[float]:
    """Seconds from a POST's 204 until a GET shows it, on an hour of its own."""
    probe_ts = 0  # 1970-01-01T00: nothing else writes there
    out: list[float] = []
    async with httpx.AsyncClient(base_url=url, timeout=5) as http:
        base = await _clicks(http, probe_ts)
        for i in range(samples):
            response = await http.post(f"/analytics?timestamp={probe_ts}&user=probe{i}&click")
            assert response.status_code == 204, response.text
            acked = time.perf_counter()
            while await _clicks(http, probe_ts) < base + i + 1:  # noqa: ASYNC110 (polling over HTTP)
                await asyncio.sleep(0.001)
            out.append(time.perf_counter() - acked)
    return out


async def _clicks(http: httpx.AsyncClient, ts: int) -> int:
    response = await http.get(f"/analytics?timestamp={ts}")
    return int(response.text.splitlines()[1].split(",")[1])


async def fill_stream(
    settings: Settings,
    events: int,
    per_message: float = 1000,
    keyed_share: float = 0.0,
    dimensions: bool = False,
) -> float:
    """Append `events` synthetic events (95% one hour, 5% five earlier ones) in batches of
    `per_message` on average (batch sizes vary around it, as group commit's do), with a share of
    them carrying an Idempotency-Key, and with `dimensions` a campaign (of 1,000), a creative (10 per
    campaign) and a site (of 500) each."""
    nc = await nats.connect(settings.nats_url)
    await ensure_stream(nc, settings)
    js = nc.jetstream()
    now = system_now_ms()
    rng = random.Random(7)
    started = time.perf_counter()
    buffers: dict[str, list[schema.Event]] = {}
    sizes: dict[str, int] = {}
    pending: list[asyncio.Future[Any]] = []
    keyed_every = round(1 / keyed_share) if keyed_share else 0

    def size() -> int:
        return max(1, round(rng.uniform(0.5, 1.5) * per_message))

    for i in range(events):
        ts = now if i % 20 else now - HOUR_MS * (1 + i % 5)
        user = f"user{(i * 7919) % 200_000}"
        kind = schema.Kind.CLICK if i % 3 == 0 else schema.Kind.IMPRESSION
        key = f"k{i}" if keyed_every and i % keyed_every == 0 else None
        subj = subject(settings.subject_prefix, hour_of(ts), partition_of(user, settings.partitions))
        buf = buffers.setdefault(subj, [])
        dims: schema.Dimensions = ()
        if dimensions:
            campaign = (i * 31) % 1000
            dims = (
                ("campaign", f"cmp{campaign}"),
                ("creative", f"cmp{campaign}-{i % 10}"),
                ("site", f"s{i % 500}"),
            )
        buf.append(schema.Event(ts, user, kind, key, dims))
        if len(buf) >= sizes.setdefault(subj, size()):
            pending.append(await js.publish_async(subj, schema.encode(schema.batch_of(events=tuple(buf)))))
            buffers[subj] = []
            sizes[subj] = size()
            if len(pending) > 256:
                await asyncio.gather(*pending)
                pending.clear()
    for subj, buf in buffers.items():
        if buf:
            pending.append(await js.publish_async(subj, schema.encode(schema.batch_of(events=tuple(buf)))))
    await asyncio.gather(*pending)
    await nc.close()
    return time.perf_counter() - started


async def stream_messages(settings: Settings) -> int:
    nc = await nats.connect(settings.nats_url)
    info = await nc.jetstream().stream_info(settings.stream_name)
    await nc.close()
    return int(info.state.messages)


async def wait_applied(settings: Settings, timeout: float = 600) -> None:
    """Until every partition's watermark reaches the stream's last sequence for it (one node or a cluster)."""
    nc = await nats.connect(settings.nats_url)
    redis = connect(settings)
    keys = Keys(settings.key_prefix)
    js = nc.jetstream()
    info = await js.stream_info(settings.stream_name, subjects_filter=">")
    last = {}
    for p in range(settings.partitions):
        subjects = [s for s in (info.state.subjects or {}) if s.endswith(f".{p}")]
        last[p] = max([(await js.get_last_msg(settings.stream_name, s)).seq or 0 for s in subjects] or [0])
    deadline = time.monotonic() + timeout
    while True:
        # Two pipelined round trips a poll: a GET at a time costs a cluster client enough CPU to slow
        # the projectors it is timing on 2 cores.
        async with redis.pipeline(transaction=False) as pipe:
            for p in range(settings.partitions):
                pipe.get(keys.generation(p))
            gens = [int(raw or 1) for raw in await pipe.execute()]
        async with redis.pipeline(transaction=False) as pipe:
            for p in range(settings.partitions):
                pipe.get(keys.watermark(gens[p], p))
            marks = [int(raw or 0) for raw in await pipe.execute()]
        if all(m >= last[p] for p, m in enumerate(marks)):
            break
        if time.monotonic() > deadline:
            raise TimeoutError(f"projector stuck at {marks}, want {last}")
        await asyncio.sleep(0.02)
    await redis.aclose()
    await nc.close()


def alternate(
    wrk: str,
    targets: dict[str, str],
    scripts: dict[str, Path],
    kinds: tuple[str, ...],
    rounds: int,
    seconds: int,
    results: dict[tuple[str, str], list[WrkResult]],
) -> None:
    """`rounds` rounds of each kind against every target; the order rotates each round, so no target
    always runs right after another's POST load."""
    names = list(targets)
    for r in range(rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        for kind in kinds:
            for name in order:
                res = run_wrk(wrk, targets[name], scripts[kind], seconds)
                results.setdefault((name, kind), []).append(res)
                failed = f"  ({res.failures} failed)" if res.failures else ""
                print(
                    f"  round {r + 1} {kind.upper():4} {name:<14} {res.rps:>9,.0f} req/s{failed}", flush=True
                )


def granian(app: str, port: int, factory: bool = False) -> list[str]:
    return [
        sys.executable, "-m", "granian", "--interface", "asgi", *(["--factory"] if factory else []),
        "--workers", "1", "--host", "127.0.0.1", "--port", str(port), "--no-access-log", app,
    ]  # fmt: skip


def wait_post(url: str, now: int, timeout: float = 60) -> None:
    """Until a POST gets its 204 (the stream exists and the server is connected)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.post(f"{url}/analytics?timestamp={now}&user=probe&click", timeout=3).status_code == 204:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{url} never stored a POST")


def main() -> None:
    parser = argparse.ArgumentParser(prog="./just bench", description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=int, default=5, help="duration of one wrk round")
    parser.add_argument("--side-rounds", type=int, default=3, help="rounds of the 2-worker and durable runs")
    parser.add_argument("--projector-events", type=int, default=2_000_000)
    parser.add_argument("--live-events", type=int, default=1_000_000, help="events of the live-shaped stream")
    parser.add_argument("--replay-events", type=int, default=10_000_000)
    parser.add_argument("--freshness-samples", type=int, default=1000)
    parser.add_argument("--output", default=str(ROOT / "docs" / "benchmarks.md"))
    parser.add_argument(
        "--no-auth", action="store_true", help="servers without users (to measure what auth costs)"
    )
    args = parser.parse_args()
    wrk = ensure_wrk()
    command = "./just bench " + " ".join(sys.argv[1:])

    with tempfile.TemporaryDirectory(prefix="hourglass-bench-") as tmp_s:
        tmp = Path(tmp_s)
        log = tmp / "bench.log"
        nats_port, redis_port, durable_port = free_port(), free_port(), free_port()
        for name in ("nats", "valkey", "nats-durable"):
            (tmp / name).mkdir()
        settings = Settings(
            nats_url=f"nats://127.0.0.1:{nats_port}",
            redis_url=f"redis://127.0.0.1:{redis_port}/0",
            http_port=free_port(),
            admin_port=0,
            http_workers=1,
            data_dir=tmp,
        )
        proj = settings.replace(stream_name="BENCHP", subject_prefix="benchp.events", key_prefix="bp")
        live = settings.replace(stream_name="BENCHL", subject_prefix="benchl.events", key_prefix="bl")
        rep = settings.replace(stream_name="BENCHR", subject_prefix="benchr.events", key_prefix="br")
        two = settings.replace(http_port=free_port(), http_workers=2)
        durable = settings.replace(
            nats_url=f"nats://127.0.0.1:{durable_port}", http_port=free_port(), nats_sync_always=True
        )
        nats_conf, durable_conf, acl = NATS_CONF, durable_nats_conf(tmp), None
        if not args.no_auth:
            # As `./just up` runs them: a user per role; each process finds its own in tmp/secrets.
            prepared = prepare(tmp, settings, nats_port, redis_port, proj, live, rep)
            nats_conf, acl = prepared.nats_config, prepared.redis_acl
            durable_conf = prepared.secrets.directory / "nats-durable.conf"
            include = os.path.relpath(tmp / "nats-durable.conf", durable_conf.parent)
            write_secret(
                durable_conf, f'include "{include}"\n\n{nats_auth_config(prepared.secrets, settings)}'
            )
        env = settings_env(settings)
        bare_port, raw_port = free_port(), free_port()
        now = system_now_ms()
        scripts = {"post": tmp / "post.lua", "get": tmp / "get.lua", "range": tmp / "range.lua"}
        scripts["post"].write_text(POST_LUA.replace("{now}", str(now)))
        scripts["get"].write_text(GET_LUA.replace("{now}", str(now)))
        scripts["range"].write_text(
            RANGE_LUA.replace("{now}", str(now)).replace("{start}", str(now - 24 * 3_600_000))
        )
        hg = f"http://127.0.0.1:{settings.http_port}"
        targets = {
            "raw ASGI": f"http://127.0.0.1:{raw_port}",
            "bare Litestar": f"http://127.0.0.1:{bare_port}",
            "hourglass": hg,
        }
        results: dict[tuple[str, str], list[WrkResult]] = {}
        with (
            process(nats_command(nats_port, tmp / "nats", nats_conf), None, log),
            process(valkey_command(redis_port, tmp / "valkey", acl), None, log),
        ):
            wait_for_port("127.0.0.1", nats_port, 20)
            wait_for_port("127.0.0.1", redis_port, 20)
            subprocess.run([sys.executable, "-m", "projector", "stream"], env=env, check=True, timeout=60)
            with (
                process([sys.executable, "-m", "server"], env, log) as server,
                process([sys.executable, "-m", "projector", "run"], env, log),
                process(granian("tests.bench.bare:create_bare_app", bare_port, factory=True), env, log),
                process(granian("tests.bench.raw:app", raw_port), env, log),
            ):
                wait_http(hg, "/readyz")
                for url in targets.values():
                    wait_http(url, f"/analytics?timestamp={now}")
                print(f"warming up; then {args.rounds} rotating rounds of {args.seconds}s each", flush=True)
                posted = 0
                for url in targets.values():
                    for kind in ("post", "get"):
                        warm = run_wrk(wrk, url, scripts[kind], 2)
                        posted += warm.ok if url == hg and kind == "post" else 0
                alternate(wrk, targets, scripts, ("post", "get"), args.rounds, args.seconds, results)
                posted += sum(r.ok for r in results[("hourglass", "post")]) + 1
                messages = asyncio.run(stream_messages(settings.with_credentials("admin")))
                per_message = posted / messages
                rss = worker_rss_mb(server.pid)

                def med(name: str, kind: str, attr: str) -> float:
                    return float(statistics.median(getattr(x, attr) for x in results[(name, kind)]))

                # Latency at half of Hourglass's peak, for Hourglass and for bare Litestar at that rate.
                half: dict[tuple[str, str], WrkResult] = {}
                paced: dict[str, Path] = {}
                for kind in ("post", "get"):
                    half_rps = med("hourglass", kind, "rps") / 2
                    for name in ("bare Litestar", "hourglass"):
                        script = pace(
                            wrk, targets[name], scripts[kind], half_rps, tmp / f"{kind}-{name[:4]}.lua"
                        )
                        paced[kind] = script if name == "hourglass" else paced.get(kind, script)
                        half[(name, kind)] = run_wrk(
                            wrk, targets[name], script, args.seconds * 2, connections=PACED_CONNECTIONS
                        )

                # A 24-hour range over hot hours (the POSTs above wrote into several of them).
                paced_range = pace(wrk, hg, scripts["range"], RANGE_RPS, tmp / "range-paced.lua")
                ranged = run_wrk(wrk, hg, paced_range, args.seconds * 2, connections=PACED_CONNECTIONS)

                # Freshness under load: half-peak POST load in the background while probing.
                background = subprocess.Popen(
                    [wrk, "-t1", f"-c{PACED_CONNECTIONS}", "-d600s", "-s", str(paced["post"]), hg],
                    stdout=subprocess.DEVNULL,
                )
                try:
                    fresh = asyncio.run(freshness(hg, args.freshness_samples))
                finally:
                    background.terminate()
                    background.wait()

                # Two HTTP workers against one, alternating.
                print(f"two workers: {args.side_rounds} rotating rounds", flush=True)
                with process([sys.executable, "-m", "server"], settings_env(two), log):
                    wait_http(f"http://127.0.0.1:{two.http_port}", "/readyz")
                    pair = {"hourglass": hg, "hourglass 2w": f"http://127.0.0.1:{two.http_port}"}
                    workers: dict[tuple[str, str], list[WrkResult]] = {}
                    alternate(wrk, pair, scripts, ("post", "get"), args.side_rounds, args.seconds, workers)

            # Durable mode: a nats-server that fsyncs before every PubAck, its own Hourglass.
            print(f"durable mode: {args.side_rounds} rotating rounds", flush=True)
            durable_env = settings_env(durable)
            with process(nats_command(durable_port, tmp / "nats-durable", durable_conf), None, log):
                wait_for_port("127.0.0.1", durable_port, 20)
                subprocess.run(
                    [sys.executable, "-m", "projector", "stream"], env=durable_env, check=True, timeout=60
                )
                with (
                    process([sys.executable, "-m", "server"], env, log),
                    process([sys.executable, "-m", "server"], durable_env, log),
                    process(granian("tests.bench.bare:create_bare_app", bare_port, factory=True), env, log),
                ):
                    durable_url = f"http://127.0.0.1:{durable.http_port}"
                    wait_post(hg, now)
                    wait_post(durable_url, now)
                    wait_http(targets["bare Litestar"], f"/analytics?timestamp={now}")
                    trio = {
                        "bare Litestar": targets["bare Litestar"],
                        "hourglass": hg,
                        "durable": durable_url,
                    }
                    side: dict[tuple[str, str], list[WrkResult]] = {}
                    alternate(wrk, trio, scripts, ("post",), args.side_rounds, args.seconds, side)

            # The projector from a cold start, on two shapes of stream: messages of 1,000 events, and
            # messages as the live path writes them (its measured mean batch, a tenth of events keyed).
            shapes = {}
            for name, stack, events, size, keyed in (
                ("1,000 events a message", proj, args.projector_events, 1000.0, 0.0),
                (f"live-shaped, {per_message:.1f} events a message, 10% keyed", live, args.live_events,
                 per_message, 0.1),
            ):  # fmt: skip
                asyncio.run(fill_stream(stack.with_credentials("admin"), events, size, keyed))
                started = time.perf_counter()
                with process([sys.executable, "-m", "projector", "run"], settings_env(stack), log):
                    asyncio.run(wait_applied(stack.with_credentials("admin")))
                shapes[name] = (events, time.perf_counter() - started)

            # Replay: a generated stream of N events, rebuilt by `python -m projector replay`; then the
            # live-shaped stream, and the stream the wrk POSTs above wrote through the real path.
            asyncio.run(fill_stream(rep.with_credentials("admin"), args.replay_events))
            replays: dict[str, tuple[float, int, int]] = {}
            for name, stack in (
                (f"{args.replay_events:,} events, 1,000 a message", rep),
                (f"{args.live_events:,} live-shaped events", live),
                ("the stream every HTTP POST above wrote", settings),
            ):
                started = time.perf_counter()
                replayed = subprocess.run(
                    [sys.executable, "-m", "projector", "replay"],
                    env=settings_env(stack),
                    cwd=ROOT,
                    capture_output=True,
                    text=True,
                )
                seconds = time.perf_counter() - started
                counted = re.search(r"replayed (\d+) events \((\d+) messages\)", replayed.stdout)
                if replayed.returncode != 0 or counted is None:
                    raise RuntimeError(f"replay failed:\n{replayed.stdout}\n{replayed.stderr}")
                # The replay's own count: the stream holds every POST of every round, not only the
                # rounds counted for the live shape.
                replays[name] = (seconds, int(counted[1]), int(counted[2]))

    def pair_ms(res: list[WrkResult] | WrkResult) -> str:
        if isinstance(res, WrkResult):
            return f"{res.p50_ms:.2f} / {res.p99_ms:.2f}"
        return (
            f"{statistics.median(x.p50_ms for x in res):.2f} / {statistics.median(x.p99_ms for x in res):.2f}"
        )

    def rate(res: list[WrkResult]) -> str:
        failures = sum(x.failures for x in res)
        return f"{statistics.median(x.rps for x in res):,.0f}" + (f" ({failures} failed)" if failures else "")

    def ratio(a: list[WrkResult], b: list[WrkResult]) -> float:
        return statistics.median(x.rps for x in a) / statistics.median(x.rps for x in b)

    def r(name: str, kind: str, source: dict[tuple[str, str], list[WrkResult]] = results) -> list[WrkResult]:
        return source[(name, kind)]

    fresh_ms = sorted(x * 1000 for x in fresh)
    f50 = fresh_ms[len(fresh_ms) // 2]
    f99 = fresh_ms[min(len(fresh_ms) - 1, int(0.99 * len(fresh_ms)))]
    lines = [
        f"| measure (wrk -t1 -c64, medians of {args.rounds} rotating rounds) | raw ASGI | bare Litestar "
        "| Hourglass | Hourglass / bare | Hourglass / raw | target |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for kind, target in (("post", "POST >= 1.0x bare"), ("get", "GET >= 2.0x bare")):
        lines.append(
            f"| {kind.upper()} req/s | {rate(r('raw ASGI', kind))} | {rate(r('bare Litestar', kind))} | "
            f"{rate(r('hourglass', kind))} | {ratio(r('hourglass', kind), r('bare Litestar', kind)):.2f}x | "
            f"{ratio(r('hourglass', kind), r('raw ASGI', kind)):.2f}x | {target} |"
        )
    for kind in ("post", "get"):
        lines.append(
            f"| {kind.upper()} p50 / p99 at peak (ms) | {pair_ms(r('raw ASGI', kind))} | "
            f"{pair_ms(r('bare Litestar', kind))} | {pair_ms(r('hourglass', kind))} | | | |"
        )
    for kind, target in (("post", "p99 <= 5 ms"), ("get", "p99 <= 2 ms")):
        at = half[("hourglass", kind)].rps
        lines.append(
            f"| {kind.upper()} p50 / p99 at half Hourglass's peak, {at:,.0f} req/s (ms) | | "
            f"{pair_ms(half[('bare Litestar', kind)])} | {pair_ms(half[('hourglass', kind)])} | | | "
            f"{target} |"
        )
    lines += [
        f"| GET of a 24-hour range, p50 / p99 at {ranged.rps:,.0f} req/s (ms) | | | {pair_ms(ranged)} "
        "| | | |",
        f"| freshness, 204 to visible in GET, p50 / p99 ({len(fresh_ms)} probes under half-peak POSTs) | | | "
        f"{f50:.1f} / {f99:.1f} ms | | | p99 <= 250 ms |",
        f"| RSS of the HTTP worker after the load | | | {rss:.0f} MB | | | <= 150 MB |",
        "",
        f"| side runs ({args.side_rounds} rotating rounds each) | req/s | ratio | |",
        "| --- | --- | --- | --- |",
    ]
    for kind in ("post", "get"):
        two_w, one_w = r("hourglass 2w", kind, workers), r("hourglass", kind, workers)
        lines.append(
            f"| {kind.upper()}, 2 HTTP workers against 1 | {rate(two_w)} against {rate(one_w)} | "
            f"{ratio(two_w, one_w):.2f}x | |"
        )
    lines += [
        f"| POST in durable mode (sync_interval always), against bare Litestar | "
        f"{rate(r('durable', 'post', side))} against {rate(r('bare Litestar', 'post', side))} | "
        f"{ratio(r('durable', 'post', side), r('bare Litestar', 'post', side)):.2f}x | "
        "default mode in the same rounds: "
        f"{ratio(r('hourglass', 'post', side), r('bare Litestar', 'post', side)):.2f}x |",
        "",
        "| projector and replay | events | seconds | events/s | target |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, (events, seconds) in shapes.items():
        lines.append(
            f"| projector from a cold start (1 process), {name} | {events:,} | {seconds:.1f} | "
            f"{events / seconds:,.0f} | >= 1,000,000/s |"
        )
    for name, (seconds, events, msgs) in replays.items():
        per_10m = seconds * 10_000_000 / events
        lines.append(
            f"| `./just replay` of {name} ({msgs:,} messages, {events / msgs:.1f} events a message) | "
            f"{events:,} | {seconds:.1f} | {events / seconds:,.0f} | "
            f"<= 20 s per 10M (here {per_10m:.0f} s per 10M) |"
        )
    header = [
        "# Benchmarks",
        "",
        f"Measured {dt.datetime.now(tz=dt.UTC):%Y-%m-%d %H:%M} UTC on {platform.node()}: "
        f"{os.cpu_count()} cores, Python {platform.python_version()}, one granian worker each unless said, "
        "nats-server, valkey-server and one projector on the same machine, no CPU pinning (every process "
        "shares every core), "
        + (
            "without users (--no-auth)."
            if args.no_auth
            else "with a user per role, as `./just up` runs them."
        ),
        "",
        f"Command: `{command.strip()}`",
        "",
    ]
    text = "\n".join(header + lines) + "\n"
    print()
    print(text)
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(text)
    print(f"written to {args.output}")


def cpu(*pids: int) -> tuple[float, ...]:
    """CPU seconds used so far by this process's waited-for children, then by each of `pids`."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    tick = os.sysconf("SC_CLK_TCK")
    own = []
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        own.append((int(fields[11]) + int(fields[12])) / tick)
    return (children.ru_utime + children.ru_stime, *own)


if __name__ == "__main__":
    main()
