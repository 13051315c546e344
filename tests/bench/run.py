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
import re
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
from redis.asyncio import Redis

from contract import schema
from contract.hours import HOUR_MS, hour_of, partition_of, subject, system_now_ms
from contract.keys import Keys
from contract.settings import Settings
from deploy.secrets import prepare
from deploy.servers import NATS_CONF, ROOT, free_port, nats_command, valkey_command, wait_for_port
from projector.stream import ensure_stream
from tests.helpers import settings_env

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
    p50_ms: float
    p99_ms: float


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
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        raise RuntimeError(f"wrk saw {errors.group(1)} error responses from {url}:\n{out}")
    return WrkResult(rps, _latency(out, "50%"), _latency(out, "99%"))


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
def process(argv: list[str], env: dict[str, str] | None, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(argv, env=env, cwd=ROOT, stdout=log.open("ab"), stderr=subprocess.STDOUT)
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


async def fill_stream(settings: Settings, events: int, per_message: int = 1000) -> float:
    """Append `events` synthetic events (95% one hour, 5% five earlier ones) in batches."""
    nc = await nats.connect(settings.nats_url)
    await ensure_stream(nc, settings)
    js = nc.jetstream()
    now = system_now_ms()
    started = time.perf_counter()
    buffers: dict[str, list[schema.Event]] = {}
    pending: list[asyncio.Future[Any]] = []
    for i in range(events):
        ts = now if i % 20 else now - HOUR_MS * (1 + i % 5)
        user = f"user{(i * 7919) % 200_000}"
        ev = schema.Event(ts, user, schema.Kind.CLICK if i % 3 == 0 else schema.Kind.IMPRESSION)
        subj = subject(settings.subject_prefix, hour_of(ts), partition_of(user, settings.partitions))
        buf = buffers.setdefault(subj, [])
        buf.append(ev)
        if len(buf) >= per_message:
            pending.append(await js.publish_async(subj, schema.encode(schema.Batch(events=tuple(buf)))))
            buffers[subj] = []
            if len(pending) > 256:
                await asyncio.gather(*pending)
                pending.clear()
    for subj, buf in buffers.items():
        if buf:
            pending.append(await js.publish_async(subj, schema.encode(schema.Batch(events=tuple(buf)))))
    await asyncio.gather(*pending)
    await nc.close()
    return time.perf_counter() - started


async def wait_applied(settings: Settings, timeout: float = 600) -> None:
    """Until every partition's watermark reaches the stream's last sequence for it."""
    nc = await nats.connect(settings.nats_url)
    redis = Redis.from_url(settings.redis_url)
    keys = Keys(settings.key_prefix)
    js = nc.jetstream()
    info = await js.stream_info(settings.stream_name, subjects_filter=">")
    last = {}
    for p in range(settings.partitions):
        subjects = [s for s in (info.state.subjects or {}) if s.endswith(f".{p}")]
        last[p] = max([(await js.get_last_msg(settings.stream_name, s)).seq or 0 for s in subjects] or [0])
    deadline = time.monotonic() + timeout
    while True:
        gen = int(await redis.get(keys.generation) or 1)
        marks = [int(await redis.get(keys.watermark(gen, p)) or 0) for p in range(settings.partitions)]
        if all(m >= last[p] for p, m in enumerate(marks)):
            break
        if time.monotonic() > deadline:
            raise TimeoutError(f"projector stuck at {marks}, want {last}")
        await asyncio.sleep(0.02)
    await redis.aclose()
    await nc.close()


def main() -> None:
    parser = argparse.ArgumentParser(prog="./just bench", description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=int, default=5, help="duration of one wrk round")
    parser.add_argument("--projector-events", type=int, default=2_000_000)
    parser.add_argument("--replay-events", type=int, default=10_000_000)
    parser.add_argument("--freshness-samples", type=int, default=200)
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
        nats_port, redis_port = free_port(), free_port()
        (tmp / "nats").mkdir()
        (tmp / "valkey").mkdir()
        settings = Settings(
            nats_url=f"nats://127.0.0.1:{nats_port}",
            redis_url=f"redis://127.0.0.1:{redis_port}/0",
            http_port=free_port(),
            admin_port=0,
            http_workers=1,
            data_dir=tmp,
        )
        proj = settings.replace(stream_name="BENCHP", subject_prefix="benchp.events", key_prefix="bp")
        rep = settings.replace(stream_name="BENCHR", subject_prefix="benchr.events", key_prefix="br")
        nats_conf, acl = NATS_CONF, None
        if not args.no_auth:
            # As `./just up` runs them: a user per role; each process finds its own in tmp/secrets.
            prepared = prepare(tmp, settings, nats_port, redis_port, proj, rep)
            nats_conf, acl = prepared.nats_config, prepared.redis_acl
        env = settings_env(settings)
        bare_port = free_port()
        now = system_now_ms()
        scripts = {
            "post": tmp / "post.lua",
            "get": tmp / "get.lua",
        }
        scripts["post"].write_text(POST_LUA.replace("{now}", str(now)))
        scripts["get"].write_text(GET_LUA.replace("{now}", str(now)))
        scripts["range"] = tmp / "range.lua"
        scripts["range"].write_text(
            RANGE_LUA.replace("{now}", str(now)).replace("{start}", str(now - 24 * 3_600_000))
        )
        hg = f"http://127.0.0.1:{settings.http_port}"
        bare = f"http://127.0.0.1:{bare_port}"
        with (
            process(nats_command(nats_port, tmp / "nats", nats_conf), None, log),
            process(valkey_command(redis_port, tmp / "valkey", acl), None, log),
        ):
            wait_for_port("127.0.0.1", nats_port, 20)
            wait_for_port("127.0.0.1", redis_port, 20)
            subprocess.run([sys.executable, "-m", "projector", "stream"], env=env, check=True, timeout=60)
            bare_cmd = [
                sys.executable, "-m", "granian", "--interface", "asgi", "--factory", "--workers", "1",
                "--host", "127.0.0.1", "--port", str(bare_port), "--no-access-log",
                "tests.bench.bare:create_bare_app",
            ]  # fmt: skip
            with (
                process([sys.executable, "-m", "server"], env, log) as server,
                process([sys.executable, "-m", "projector", "run"], env, log),
                process(bare_cmd, env, log),
            ):
                wait_http(hg, "/readyz")
                wait_http(bare, f"/analytics?timestamp={now}")
                print(
                    f"warming up; then {args.rounds} alternating rounds of {args.seconds}s each", flush=True
                )
                for target in (hg, bare):
                    for kind in ("post", "get"):
                        run_wrk(wrk, target, scripts[kind], 2)
                results: dict[tuple[str, str], list[WrkResult]] = {}
                for r in range(args.rounds):
                    for kind in ("post", "get"):
                        for name, target in (("bare", bare), ("hourglass", hg)):
                            res = run_wrk(wrk, target, scripts[kind], args.seconds)
                            results.setdefault((name, kind), []).append(res)
                            print(
                                f"  round {r + 1} {kind.upper():4} {name:<9} {res.rps:>9,.0f} req/s",
                                flush=True,
                            )
                rss = worker_rss_mb(server.pid)

                def med(name: str, kind: str, attr: str) -> float:
                    return float(statistics.median(getattr(x, attr) for x in results[(name, kind)]))

                half: dict[str, WrkResult] = {}
                paced: dict[str, Path] = {}
                for kind in ("post", "get"):
                    half_peak = med("hourglass", kind, "rps") / 2
                    paced[kind] = pace(wrk, hg, scripts[kind], half_peak, tmp / f"{kind}-paced.lua")
                    half[kind] = run_wrk(
                        wrk, hg, paced[kind], args.seconds * 2, connections=PACED_CONNECTIONS
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

            # Projector throughput: a fresh stream of batched events, one projector from a cold start.
            asyncio.run(fill_stream(proj.with_credentials("admin"), args.projector_events))
            started = time.perf_counter()
            with process([sys.executable, "-m", "projector", "run"], settings_env(proj), log):
                asyncio.run(wait_applied(proj.with_credentials("admin")))
            projector_seconds = time.perf_counter() - started

            # Replay: a generated stream of N events, rebuilt by `python -m projector replay`.
            asyncio.run(fill_stream(rep.with_credentials("admin"), args.replay_events))
            started = time.perf_counter()
            replayed = subprocess.run(
                [sys.executable, "-m", "projector", "replay"],
                env=settings_env(rep),
                cwd=ROOT,
                capture_output=True,
                text=True,
            )
            if replayed.returncode != 0 or f"replayed {args.replay_events} events" not in replayed.stdout:
                raise RuntimeError(f"replay failed:\n{replayed.stdout}\n{replayed.stderr}")
            replay_seconds = time.perf_counter() - started

    def pair(name: str, kind: str) -> str:
        return f"{med(name, kind, 'p50_ms'):.2f} / {med(name, kind, 'p99_ms'):.2f}"

    def rate(name: str, kind: str) -> str:
        return f"{med(name, kind, 'rps'):,.0f}"

    post_ratio = med("hourglass", "post", "rps") / med("bare", "post", "rps")
    get_ratio = med("hourglass", "get", "rps") / med("bare", "get", "rps")
    fresh_ms = sorted(x * 1000 for x in fresh)
    f50 = fresh_ms[len(fresh_ms) // 2]
    f99 = fresh_ms[min(len(fresh_ms) - 1, int(0.99 * len(fresh_ms)))]
    projector_rate = args.projector_events / projector_seconds
    lines = [
        "| measure | bare Litestar | Hourglass | ratio / target |",
        "| --- | --- | --- | --- |",
        f"| POST req/s (wrk -t1 -c64, median of {args.rounds}) | {rate('bare', 'post')} | "
        f"{rate('hourglass', 'post')} | {post_ratio:.2f}x (target >= 0.85x) |",
        f"| GET current hour req/s | {rate('bare', 'get')} | {rate('hourglass', 'get')} | "
        f"{get_ratio:.2f}x (target >= 0.95x) |",
        f"| POST p50 / p99 at peak (ms) | {pair('bare', 'post')} | {pair('hourglass', 'post')} | |",
        f"| GET p50 / p99 at peak (ms) | {pair('bare', 'get')} | {pair('hourglass', 'get')} | |",
        f"| POST p50 / p99 at half peak, {half['post'].rps:,.0f} req/s (ms) | | "
        f"{half['post'].p50_ms:.2f} / {half['post'].p99_ms:.2f} | p99 target <= 5 ms |",
        f"| GET p50 / p99 at half peak, {half['get'].rps:,.0f} req/s (ms) | | "
        f"{half['get'].p50_ms:.2f} / {half['get'].p99_ms:.2f} | p99 target <= 2 ms |",
        f"| GET of a 24-hour range, p50 / p99 at {ranged.rps:,.0f} req/s (ms) | | "
        f"{ranged.p50_ms:.2f} / {ranged.p99_ms:.2f} | p99 target <= 5 ms |",
        f"| freshness, 204 to visible in GET, p50 / p99 ({len(fresh_ms)} probes under half-peak POSTs) | | "
        f"{f50:.1f} / {f99:.1f} ms | p99 target <= 250 ms |",
        f"| projector, {args.projector_events:,} events from a cold start (1 process) | | "
        f"{projector_rate:,.0f} events/s ({projector_seconds:.1f} s) | target >= 1,000,000/s |",
        f"| `./just replay` of {args.replay_events:,} events | | {replay_seconds:.1f} s | target <= 20 s |",
        f"| RSS of the HTTP worker after the load | | {rss:.0f} MB | target <= 150 MB |",
    ]
    header = [
        "# Benchmarks",
        "",
        f"Measured {dt.datetime.now(tz=dt.UTC):%Y-%m-%d %H:%M} UTC on {platform.node()}: "
        f"{os.cpu_count()} cores, Python {platform.python_version()}, one granian worker each, "
        "nats-server, valkey-server and one projector on the same machine, "
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


if __name__ == "__main__":
    main()
