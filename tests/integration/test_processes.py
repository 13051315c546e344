"""Crash tests in real subprocesses: SIGKILL the projector, and run, replay and restart the whole stack."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import pytest
from redis.asyncio import Redis

from api.reader import HourTotals
from contract.hours import system_now_ms
from contract.keys import Keys
from deploy.servers import ROOT, port_open
from deploy.settings import Settings
from tests.helpers import eventually, pause, settings_env, settled, stored_hours
from tests.integration.conftest import spawn
from tests.integration.load import Tally, drive, wait_until_done
from tests.integration.workload import Truth, answers, mixed_events, post_path, stored_matches
from tests.ports import free_port

pytestmark = pytest.mark.slow


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def _descendants_seen(pids: list[int]) -> list[int]:
    """Children of those processes that are still around (granian's workers, for instance)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (FileNotFoundError, ProcessLookupError, ValueError, IndexError):
            continue
        if ppid in pids:
            found.append(int(stat.parent.name))
    return found


def _command_lines(pids: list[int]) -> dict[int, list[bytes]]:
    """Each process's command line, as /proc shows it now."""
    found = {}
    for pid in pids:
        try:
            found[pid] = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except (FileNotFoundError, ProcessLookupError):
            continue
    return found


def in_redis(settings: Settings, truth: Truth) -> Callable[[Redis], Awaitable[dict[int, HourTotals]]]:
    """Every hour of the truth as Redis holds it in the live generation, past the HTTP cache."""
    return lambda redis: stored_hours(redis, settings, truth.hours())


def exact(truth: Truth) -> object:
    return lambda got: all(got[h][1:] == truth.text(h)[1:] for h in truth.hours())


async def test_projector_killed_with_sigkill_mid_load_counts_every_event_once(
    settings: Settings,
    client: httpx.AsyncClient,
    redis: Redis,
    tmp_path: Path,
    reaper: list[subprocess.Popen[bytes]],
) -> None:
    env = settings_env(settings.replace(projector_batch=10))
    log = tmp_path / "projector.log"
    events = mixed_events(system_now_ms(), 600, seed=11)
    truth = Truth()
    keys = Keys(settings.key_prefix)

    async def applied() -> int:
        values = await redis.mget([keys.watermark(1, p) for p in range(settings.partitions)])
        return sum(int(v) for v in values if v is not None)

    projector = spawn(["-m", "projector", "run"], env, log)
    reaper.append(projector)
    kills = 0
    for i, (ts, user, kind) in enumerate(events):
        assert (await client.post(post_path(ts, user, kind))).status_code == 204
        truth.add(ts, user, kind)
        if i in (200, 400):
            await eventually(applied, lambda n: n > 0)
            projector.send_signal(signal.SIGKILL)
            projector.wait()
            kills += 1
            projector = spawn(["-m", "projector", "run"], env, log)
            reaper.append(projector)
    assert kills == 2
    got = await eventually(lambda: answers(client, truth), exact(truth), timeout=60)  # type: ignore[arg-type]
    for hour in truth.hours():
        users = truth.text(hour)[0]
        assert abs(got[hour][0] - users) <= max(1, users * 0.03)
    await settled(settings, in_redis(settings, truth), stored_matches(truth), redis=redis)
    print(
        f"\nprojector SIGKILLed twice mid-load: events={len(events)} 204s={len(events)} 503s=0 counted=exact"
    )


async def test_projectors_started_killed_and_paused_during_load_count_every_event_once(
    settings: Settings,
    client: httpx.AsyncClient,
    redis: Redis,
    tmp_path: Path,
    reaper: list[subprocess.Popen[bytes]],
) -> None:
    settings = settings.replace(projector_batch=20, lease_ttl_s=1.0)
    env = settings_env(settings)
    log = tmp_path / "projectors.log"
    keys = Keys(settings.key_prefix)

    def projector() -> subprocess.Popen[bytes]:
        proc = spawn(["-m", "projector", "run"], env, log)
        reaper.append(proc)
        return proc

    async def holders() -> list[str]:
        owners = await redis.mget([keys.lease(p) for p in range(settings.partitions)])
        return [o.decode() if isinstance(o, bytes) else "" for o in owners]

    def held_by(proc: subprocess.Popen[bytes]) -> Callable[[list[str]], bool]:
        return lambda owners: any(f":{proc.pid}:" in o for o in owners)

    tally = Tally()
    enough = asyncio.Event()
    load = asyncio.create_task(
        drive(client, system_now_ms(), 100_000, duplicate_every=15, tally=tally, until=enough)
    )
    first = projector()
    await eventually(holders, held_by(first))
    second, third = projector(), projector()
    await eventually(holders, lambda o: held_by(second)(o) and held_by(third)(o))
    first.send_signal(signal.SIGKILL)
    second.send_signal(signal.SIGSTOP)  # paused: its leases lapse and the third takes over
    await eventually(holders, lambda o: all(f":{third.pid}:" in x for x in o))
    second.send_signal(signal.SIGCONT)  # wakes up believing it still holds partitions
    await wait_until_done(tally, tally.done + 300)
    enough.set()
    await load
    await eventually(lambda: answers(client, tally.truth), exact(tally.truth), timeout=60)  # type: ignore[arg-type]
    await settled(settings, in_redis(settings, tally.truth), stored_matches(tally.truth), redis=redis)
    await eventually(holders, lambda o: held_by(second)(o) and held_by(third)(o))
    print(f"\nprojectors: 3 started, 1 SIGKILLed, 1 paused past its lease: {tally.report()} counted=exact")


async def test_stack_serves_replays_and_restarts_with_identical_answers(
    tmp_path: Path, reaper: list[subprocess.Popen[bytes]]
) -> None:
    http_port, nats_port, redis_port = free_port(), free_port(), free_port()
    settings = Settings(
        http_port=http_port,
        admin_port=free_port(),
        http_workers=2,
        nats_url=f"nats://127.0.0.1:{nats_port}",
        redis_url=f"redis://127.0.0.1:{redis_port}/0",
        data_dir=tmp_path / "data",
    )
    env = settings_env(settings)
    log = tmp_path / "up.log"

    def up() -> subprocess.Popen[bytes]:
        proc = spawn(["-m", "deploy.supervisor"], env, log)
        reaper.append(proc)
        return proc

    stack = up()
    truth = Truth()
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{http_port}", timeout=10) as http:
        await eventually(lambda: http.get("/readyz"), lambda r: r.status_code == 200, timeout=60)
        for ts, user, kind in mixed_events(system_now_ms(), 300, seed=13):
            assert (await http.post(post_path(ts, user, kind))).status_code == 204
            truth.add(ts, user, kind)
        live = await eventually(lambda: answers(http, truth), exact(truth), timeout=60)  # type: ignore[arg-type]
        admin_settings = settings.with_credentials("admin")
        stored = await settled(admin_settings, in_redis(settings, truth), stored_matches(truth))
        # The admin port answers for every worker.
        admin = f"http://127.0.0.1:{settings.admin_port}/metrics"
        scraped = (await asyncio.to_thread(httpx.get, admin)).text
        assert 'hourglass_http_requests_total{method="POST",route="/analytics",status="204"} 300.0' in scraped

        # The supervisor restarts a child that dies, and says so.
        pid = int(re.findall(r"projector \| started \(pid (\d+)\)", log.read_text())[-1])
        os.kill(pid, signal.SIGKILL)
        await eventually(
            lambda: asyncio.to_thread(log.read_text),
            lambda text: (
                "projector | exited with -9; restarting" in text and text.count("projector | started") == 2
            ),
        )

        replay = subprocess.run(
            [sys.executable, "-m", "projector", "replay"], env=env, cwd=ROOT, capture_output=True, timeout=120
        )
        assert replay.returncode == 0, replay.stderr.decode()
        assert b"replayed 300 events" in replay.stdout
        # Redis itself: a GET may serve the switched-out generation from its cache for a while.
        assert await settled(admin_settings, in_redis(settings, truth), stored.__eq__) == stored

        children = [int(pid) for pid in re.findall(r"\| started \(pid (\d+)\)", log.read_text())]
        stack.send_signal(signal.SIGINT)
        assert await asyncio.to_thread(stack.wait, 30) == 0
        for port in (http_port, nats_port, redis_port):
            assert not port_open("127.0.0.1", port), f"port {port} still served after Ctrl-C"
        # Every process the stack started is gone: the servers, the stream step, HTTP and its workers.
        assert len(children) >= 5
        left = [pid for pid in children + _descendants_seen(children) if _running(pid)]
        assert not left, f"still running after Ctrl-C: {left}"

        up()
        await eventually(lambda: http.get("/readyz"), lambda r: r.status_code == 200, timeout=60)
        assert await answers(http, truth) == live
        assert await settled(admin_settings, in_redis(settings, truth), stored.__eq__) == stored


async def test_a_replay_split_over_build_processes_answers_as_live_and_its_builds_end_with_it(
    settings: Settings,
    client: httpx.AsyncClient,
    projector: None,
    redis: Redis,
    tmp_path: Path,
    reaper: list[subprocess.Popen[bytes]],
) -> None:
    settings = settings.replace(replay_processes=2, lease_ttl_s=1.0)
    env = settings_env(settings)
    log = tmp_path / "replay.log"
    truth = Truth()
    for ts, user, kind in mixed_events(system_now_ms(), 300, seed=17):
        assert (await client.post(post_path(ts, user, kind))).status_code == 204
        truth.add(ts, user, kind)
    await eventually(lambda: answers(client, truth), exact(truth), timeout=60)  # type: ignore[arg-type]
    live = await settled(settings, in_redis(settings, truth), stored_matches(truth), redis=redis)

    def replay() -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            [sys.executable, "-m", "projector", "replay"], env=env, cwd=ROOT, capture_output=True, timeout=120
        )

    done = await asyncio.to_thread(replay)
    assert done.returncode == 0, done.stderr.decode()
    assert b"replayed 300 events" in done.stdout
    assert b"in 2 build processes" in done.stderr
    # Redis itself: a GET may serve the switched-out generation from its cache for a while.
    assert await stored_hours(redis, settings, truth.hours()) == live

    # Killed while its builds start: they stop on their own, and the next replay goes through.
    killed = spawn(["-m", "projector", "replay"], env, log)
    reaper.append(killed)
    # Found by their parent first; a child seen between fork and exec still shows the replay's command line.
    started = await eventually(
        lambda: asyncio.to_thread(_command_lines, _descendants_seen([killed.pid])),
        lambda found: len(found) == 2 and all(b"build" in command for command in found.values()),
        interval=0.01,
    )
    builds = list(started)
    for pid in builds:
        os.kill(pid, signal.SIGSTOP)
    for command in started.values():
        # The job, with its URLs and their credentials, goes by stdin: nothing of it in the command line.
        assert not any(settings.nats_url.encode() in part or b"redis://" in part for part in command)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    for pid in builds:
        os.kill(pid, signal.SIGCONT)
    await eventually(
        lambda: asyncio.to_thread(lambda: [p for p in builds if _running(p)]), lambda left: not left
    )
    assert log.read_text().count("the replay that started this build is gone; stopping") == 2
    again = await eventually(lambda: asyncio.to_thread(replay), lambda r: r.returncode == 0, timeout=30)
    assert b"replayed 300 events" in again.stdout
    assert await stored_hours(redis, settings, truth.hours()) == live
    keys = await redis.keys(f"{settings.key_prefix}:*:g*:wm")
    generations = {(k.decode() if isinstance(k, bytes) else k).split(":")[2] for k in keys}
    assert len(generations) == 1, f"watermarks of more than the live generation left: {generations}"


async def test_readyz_turns_503_naming_the_projectors_once_the_only_one_stops_heartbeating(
    settings: Settings, client: httpx.AsyncClient, tmp_path: Path, reaper: list[subprocess.Popen[bytes]]
) -> None:
    before = await eventually(lambda: client.get("/readyz"), lambda r: r.status_code == 503)
    assert "projector: none is running" in before.text
    # Ingestion does not need a projector: the balancer's probe is 200 and a POST is taken.
    await eventually(lambda: client.get("/readyz/ingest"), lambda r: r.status_code == 200)
    assert (await client.post(f"/analytics?timestamp={system_now_ms()}&user=p&click")).status_code == 204
    projector = spawn(
        ["-m", "projector", "run"], settings_env(settings.replace(lease_ttl_s=1.0)), tmp_path / "p.log"
    )
    reaper.append(projector)
    # Ready because of it: nothing else was missing.
    await eventually(lambda: client.get("/readyz"), lambda r: r.status_code == 200, timeout=30)
    pause(projector.pid)  # alive but silent: no heartbeat, no clean leave
    gone = await eventually(lambda: client.get("/readyz"), lambda r: r.status_code == 503, timeout=30)
    assert "projector: none is running (no heartbeat within its lease)" in gone.text
    assert (await client.get("/readyz/ingest")).status_code == 200
    assert (await client.post(f"/analytics?timestamp={system_now_ms()}&user=q&click")).status_code == 204
