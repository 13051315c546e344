"""POST /analytics/batch against real NATS and Valkey: a batch spanning many hours and partitions counts
exactly, its retry under the same Idempotency-Key counts once, and one without a key counts again."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import gzip
import json
import os
import re
import signal
import subprocess
import sys
from collections import defaultdict
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path

import httpx
import nats
import pytest
from nats.aio.client import Client as NATS
from redis.asyncio import Redis

from api.reader import Reader
from contract.hours import HOUR_MS, hour_of, hour_token, partition_of, system_now_ms
from contract.keys import Keys
from deploy.projections_client import connect
from deploy.servers import ROOT
from deploy.settings import Settings
from projector.live.balancer import run_projector
from tests.conftest import Server
from tests.helpers import isolated_settings, settings_env, settled
from tests.integration.conftest import spawn, wait_ready

HOURS = range(9, 14)


def body(events: Sequence[Mapping[str, object]]) -> bytes:
    return b"".join(json.dumps(e).encode() + b"\n" for e in events)


def truth(events: Sequence[Mapping[str, object]], times: int = 1) -> dict[int, tuple[int, int, int]]:
    users: dict[int, set[object]] = defaultdict(set)
    kinds: dict[int, list[object]] = defaultdict(list)
    for e in events:
        hour = hour_of(int(str(e["timestamp"])))
        users[hour].add(e["user"])
        kinds[hour].extend([e["event"]] * times)
    return {h: (len(users[h]), kinds[h].count("click"), kinds[h].count("impression")) for h in kinds}


async def stored(redis: Redis, settings: Settings, hours: list[int]) -> dict[int, tuple[int, int, int]]:
    reader = Reader(redis, Keys(settings.key_prefix), settings.partitions)
    out = {}
    for hour in hours:
        t = await reader.hour(hour)
        out[hour] = (t.unique_users, t.clicks, t.impressions)
    return out


@pytest.mark.usefixtures("projector")
async def test_a_batch_over_many_hours_and_partitions_counts_exactly_and_once_when_retried_with_a_key(
    client: httpx.AsyncClient, nc: NATS, redis: Redis, settings: Settings
) -> None:
    keyed = [
        {
            "timestamp": h * HOUR_MS + i * 7_000,
            "user": f"u{i % 15}",
            "event": "click" if i % 3 else "impression",
        }
        for h in HOURS
        for i in range(40)
    ]
    assert len({partition_of(str(e["user"]), settings.partitions) for e in keyed}) == settings.partitions
    headers = {"Content-Type": "application/x-ndjson", "Idempotency-Key": "import-7"}
    bad = {"timestamp": 9 * HOUR_MS, "user": "", "event": "click"}
    for _ in range(2):  # a retry of the whole batch, as after a timeout
        answer = await client.post("/analytics/batch", content=body([*keyed, bad]), headers=headers)
        assert answer.status_code == 200, answer.text
        assert answer.json() == {
            "accepted": 200,
            "duplicates": 0,
            "rejected": [{"line": 201, "error": "user: is empty"}],
        }

    # gzip and both limits, on the real server (settings: at most 10,000 events and 8 MiB)
    gz = await client.post(
        "/analytics/batch",
        content=gzip.compress(f"timestamp,event,user\n{21 * HOUR_MS},impression,g1\n".encode()),
        headers={"Content-Type": "text/csv", "Content-Encoding": "gzip"},
    )
    assert gz.json() == {"accepted": 1, "duplicates": 0, "rejected": []}
    many = body(
        [{"timestamp": 22 * HOUR_MS, "user": "m", "event": "click"}] * (settings.batch_max_events + 1)
    )
    assert (await client.post("/analytics/batch", content=many, headers=headers)).status_code == 413
    bomb = gzip.compress(b"\n" * (settings.batch_max_bytes + 1))
    too_big = await client.post(
        "/analytics/batch", content=bomb, headers={**headers, "Content-Encoding": "gzip"}
    )
    assert too_big.status_code == 413
    assert "ANALYTICS_BATCH_MAX_BYTES" in too_big.text

    unkeyed = [{"timestamp": 20 * HOUR_MS + i, "user": f"v{i}", "event": "click"} for i in range(10)]
    for _ in range(2):  # no key anywhere: the retry is counted again (docs/api.md says so)
        answer = await client.post(
            "/analytics/batch", content=body(unkeyed), headers={"Content-Type": "application/x-ndjson"}
        )
        assert answer.json()["accepted"] == 10

    gz_event = {"timestamp": 21 * HOUR_MS, "user": "g1", "event": "impression"}
    want = {**truth(keyed), **truth(unkeyed, times=2), **truth([gz_event]), 22: (0, 0, 0)}  # 22: the 413
    hours = sorted(want)
    assert (
        await settled(
            settings, lambda r: stored(r, settings, hours), lambda got: got == want, nc=nc, redis=redis
        )
        == want
    )


def test_the_readme_batch_line_is_answered_as_the_readme_says(http_server: tuple[str, Settings]) -> None:
    """Run as written against a real server (granian), with its port."""
    base, _ = http_server
    text = (ROOT / "README.md").read_text()
    block = text.split("Many events at once", 1)[1].split("```sh\n", 1)[1].split("```", 1)[0]
    promised = re.search(r"^# (\{.*\})$", block, re.M)
    assert promised is not None
    script = block.replace("localhost:8080", base)
    done = subprocess.run(["bash", "-ec", script], capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == json.loads(promised.group(1))


async def test_an_import_run_twice_counts_each_event_once_and_puts_refused_lines_beside_the_file(
    http_server: tuple[str, Settings], tmp_path: Path
) -> None:
    """`./just import` as the CLI, against a real server, with a projector counting what it stores."""
    base, settings = http_server
    events = [
        {
            "timestamp": (30 + i % 3) * HOUR_MS + i,
            "user": f"w{i % 40}",
            "event": "click" if i % 4 else "impression",
        }
        for i in range(2500)  # three chunks
    ]
    lines = [json.dumps(e) for e in events]
    lines.insert(1200, '{"timestamp": 5, "user": "x", "event": "view"}')  # the file's line 1201
    ndjson = tmp_path / "events.ndjson.gz"
    ndjson.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))
    table = tmp_path / "more.csv"
    table.write_text(f"user,timestamp,event\nz1,{33 * HOUR_MS},click\nz2,{33 * HOUR_MS},nope\n")
    command = [sys.executable, "-m", "ingest", "import", str(ndjson), str(table), "--url", base]
    for _ in range(2):
        done = subprocess.run(
            command, env=settings_env(settings), capture_output=True, text=True, timeout=120, check=False
        )
        assert done.returncode == 1, done.stderr  # some lines were refused
        assert "2,500 events accepted" in done.stderr, done.stderr
    assert (
        tmp_path / "events.ndjson.gz.rejects"
    ).read_text() == "1201\tevent: must be 'click' or 'impression', got 'view'\n"
    assert (tmp_path / "more.csv.rejects").read_text().startswith("3\tevent:")

    want = {**truth(events), **truth([{"timestamp": 33 * HOUR_MS, "user": "z1", "event": "click"}])}
    hours = sorted(want)
    async with _projecting(settings):
        assert await settled(settings, lambda r: stored(r, settings, hours), lambda got: got == want) == want


async def test_a_worker_sigkilled_mid_batch_then_a_retry_with_the_same_key_ends_exact(
    nats_server: Server, redis_server: Server, tmp_path: Path, reaper: list[subprocess.Popen[bytes]]
) -> None:
    """Small messages (20 events each, one append in flight) make a 6,000-event batch take hundreds of
    appends, so the kill lands after some of it is in the stream and before the answer."""
    settings = isolated_settings(
        nats_server.url, redis_server.url, http_workers=1, publish_max_batch=20, publish_timeout_s=2.0
    )
    env, log = settings_env(settings), tmp_path / "server.log"
    subprocess.run([sys.executable, "-m", "projector", "stream"], env=env, cwd=ROOT, check=True, timeout=60)
    base = f"http://127.0.0.1:{settings.http_port}"
    events = [
        {
            "timestamp": (40 + i % 6) * HOUR_MS + i,
            "user": f"k{i % 120}",
            "event": "click" if i % 5 else "impression",
        }
        for i in range(6000)
    ]
    headers = {"Content-Type": "application/x-ndjson", "Idempotency-Key": "ad-server-42"}
    nc = await nats.connect(**settings.nats_options("test-sigkill"))
    js = nc.jetstream()
    try:
        server = spawn(["-m", "server"], env, log)
        reaper.append(server)
        wait_ready(base, server)
        async with httpx.AsyncClient(base_url=base, timeout=30) as http:
            post = asyncio.create_task(http.post("/analytics/batch", content=body(events), headers=headers))
            while (await js.stream_info(settings.stream_name)).state.messages == 0:
                assert not post.done(), "the batch was answered before any of it was seen in the stream"
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
            with pytest.raises(httpx.TransportError):
                await post
        partial = (await js.stream_info(settings.stream_name)).state.messages
        assert 0 < partial < len(events) // 20, partial  # some of the batch was stored, not all

        again = spawn(["-m", "server"], env, log)
        reaper.append(again)
        wait_ready(base, again)
        async with httpx.AsyncClient(base_url=base, timeout=30) as http:
            answer = await http.post("/analytics/batch", content=body(events), headers=headers)
        assert answer.json() == {"accepted": 6000, "duplicates": 0, "rejected": []}

        want = truth(events)
        hours = sorted(want)
        async with _projecting(settings):
            assert await settled(settings, lambda r: stored(r, settings, hours), lambda g: g == want) == want
    finally:
        await nc.close()


def _run(args: list[str], settings: Settings) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args],
        env=settings_env(settings),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


async def test_an_export_is_the_range_read_with_verdicts_and_its_raw_events_rebuild_a_second_stack(
    http_server: tuple[str, Settings],
    nats_server: Server,
    redis_server: Server,
    tmp_path: Path,
    reaper: list[subprocess.Popen[bytes]],
) -> None:
    base, settings = http_server
    events = [
        {
            "timestamp": (50 + i % 4) * HOUR_MS + i,
            "user": f"e{i % 24}",
            "event": "click" if i % 3 else "impression",
        }
        for i in range(400)
    ] + [{"timestamp": 51 * HOUR_MS, "user": "kept", "event": "click", "key": "k-1", "campaign": "spring"}]
    async with httpx.AsyncClient(base_url=base) as http:
        answer = await http.post(
            "/analytics/batch", content=body(events), headers={"Content-Type": "application/x-ndjson"}
        )
        assert answer.json()["accepted"] == len(events)
        want = truth(events)
        hours = sorted(want)
        window = ["--from", "1970-01-03T02:00:00Z", "--to", "1970-01-03T06:00:00Z"]  # hours 50-53
        assert [hour_of(moment) for moment in (50 * HOUR_MS, 53 * HOUR_MS)] == [hours[0], hours[-1]]
        async with _projecting(settings):
            await settled(settings, lambda r: stored(r, settings, hours), lambda got: got == want)
            served = (
                await http.get("/analytics/range", params={"from": 50 * HOUR_MS, "to": 54 * HOUR_MS})
            ).text
        before = _run(["-m", "projector", "export", *window, "--url", base], settings)
        assert before.returncode == 0, before.stderr
        audited = _run(["-m", "projector", "audit", *(hour_token(h) for h in hours)], settings)
        assert audited.returncode == 0, audited.stdout + audited.stderr
        after = _run(["-m", "projector", "export", *window, "--url", base], settings)
    rows = served.splitlines()[1:-1]  # without the header and the total
    assert before.stdout.splitlines() == [
        "hour,unique_users,clicks,impressions,audit",
        *(r + ",not yet audited" for r in rows),
    ]
    assert after.stdout.splitlines()[1:] == [r + ",audited" for r in rows]

    raw = tmp_path / "moved.ndjson.gz"
    exported = _run(["-m", "projector", "export", "--raw", *window, "--out", str(raw)], settings)
    assert exported.returncode == 0, exported.stderr
    lines = [json.loads(line) for line in gzip.decompress(raw.read_bytes()).splitlines()]
    assert sorted(map(json.dumps, lines)) == sorted(map(json.dumps, events))  # keys and dimensions kept

    second = isolated_settings(nats_server.url, redis_server.url, http_workers=1)
    assert _run(["-m", "projector", "stream"], second).returncode == 0
    server = spawn(["-m", "server"], settings_env(second), tmp_path / "second.log")
    reaper.append(server)
    second_base = f"http://127.0.0.1:{second.http_port}"
    wait_ready(second_base, server)
    imported = _run(["-m", "ingest", "import", str(raw), "--url", second_base], second)
    assert imported.returncode == 0, imported.stderr
    async with _projecting(second):
        await settled(second, lambda r: stored(r, second, hours), lambda got: got == want)


async def test_an_export_by_campaign_gives_each_buckets_breakdown_rows_with_its_verdict(
    http_server: tuple[str, Settings],
) -> None:
    base, settings = http_server
    first = hour_of(system_now_ms()) - 3
    events = [
        {
            "timestamp": (first + i % 2) * HOUR_MS + i,
            "user": f"b{i % 7}",
            "event": "click" if i % 4 else "impression",
        }
        | ({"campaign": f"c{i % 3}"} if i % 5 else {})
        for i in range(60)
    ]
    window = ["--from", iso(first * HOUR_MS), "--to", iso((first + 2) * HOUR_MS)]
    async with httpx.AsyncClient(base_url=base) as http, _projecting(settings):
        answer = await http.post(
            "/analytics/batch", content=body(events), headers={"Content-Type": "application/x-ndjson"}
        )
        assert answer.json()["accepted"] == len(events)
        want = truth(events)
        await settled(settings, lambda r: stored(r, settings, sorted(want)), lambda got: got == want)
        served = [
            (
                await http.get(
                    "/analytics/breakdown",
                    params={"by": "campaign", "timestamp": hour * HOUR_MS, "top": 1000},
                    headers={"Accept": "application/json"},
                )
            ).json()
            for hour in (first, first + 1)
        ]
        exported = _run(["-m", "projector", "export", *window, "--by", "campaign", "--url", base], settings)
    assert exported.returncode == 0, exported.stderr
    lines = exported.stdout.splitlines()
    assert lines[0] == "hour,campaign,unique_users,clicks,impressions,ctr,audit"
    expected = []
    for hour, found in zip((first, first + 1), served, strict=True):
        for row in [*found["rows"], {**found["total"], "value": "total"}]:
            ctr = "" if row["ctr"] is None else f"{row['ctr']:.4f}"
            counts = f"{row['unique_users']},{row['clicks']},{row['impressions']}"
            expected.append(f"{iso(hour * HOUR_MS)},{row['value']},{counts},{ctr},not yet audited")
    assert lines[1:] == expected
    assert sum(int(line.split(",")[3]) for line in lines[1:] if ",c" in line) == sum(
        1 for i, e in enumerate(events) if i % 5 and e["event"] == "click"
    )


def iso(ms: int) -> str:
    """The UTC hour label the range read gives (`1970-01-03T02:00:00Z`)."""
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@contextlib.asynccontextmanager
async def _projecting(settings: Settings) -> AsyncIterator[None]:
    nc = await nats.connect(**settings.nats_options("test-projector"))
    redis = connect(settings)
    stop = asyncio.Event()
    task = asyncio.create_task(run_projector(settings, nc, redis, stop))
    try:
        yield
    finally:
        stop.set()
        await task
        await nc.close()
        await redis.aclose()
