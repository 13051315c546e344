"""Every fault at once, in real processes: the counts still converge to exactly the 204s, hour by hour."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from redis.asyncio import Redis

from contract.hours import system_now_ms
from deploy.servers import ROOT
from deploy.settings import Settings
from tests.conftest import Server
from tests.helpers import eventually, isolated_settings, settings_env
from tests.integration.load import Tally, drive, wait_until_done
from tests.integration.test_faults import converged
from tests.ports import free_port

pytestmark = pytest.mark.slow


class Processes:
    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.env, self.log, self.procs = env, log, list[subprocess.Popen[bytes]]()

    def start(self, *args: str) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            [sys.executable, *args],
            env=self.env,
            cwd=ROOT,
            stdout=self.log.open("ab"),
            stderr=subprocess.STDOUT,
        )
        self.procs.append(proc)
        return proc

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()


async def test_every_fault_within_a_minute_and_the_counts_still_converge_exactly(
    own_nats: Server, own_redis: Server, tmp_path: Path
) -> None:
    settings: Settings = isolated_settings(
        own_nats.url,
        own_redis.url,
        http_port=free_port(),
        http_workers=2,
        projector_batch=50,
        lease_ttl_s=1.5,
    )
    procs = Processes(settings_env(settings), tmp_path / "processes.log")
    faults: list[str] = []
    started = time.monotonic()
    try:
        make_stream = [sys.executable, "-m", "projector", "stream"]
        subprocess.run(make_stream, env=settings_env(settings), cwd=ROOT, check=True, timeout=60)
        procs.start("-m", "server")
        first = procs.start("-m", "projector", "run")
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{settings.http_port}", timeout=10) as http:
            await eventually(lambda: http.get("/readyz"), lambda r: r.status_code == 200, timeout=60)
            tally = Tally()
            enough = asyncio.Event()
            load = asyncio.create_task(
                drive(
                    http,
                    system_now_ms(),
                    200_000,
                    concurrency=16,
                    duplicate_every=5,
                    tally=tally,
                    until=enough,
                )
            )

            def fault(name: str) -> None:
                faults.append(f"{time.monotonic() - started:5.1f}s after {tally.done} events: {name}")

            await wait_until_done(tally, 300)
            first.send_signal(signal.SIGKILL)
            fault("projector SIGKILL #1")
            procs.start("-m", "projector", "run")
            await wait_until_done(tally, tally.done + 300)
            second = procs.start("-m", "projector", "run")
            fault("second projector started")
            await wait_until_done(tally, tally.done + 300)
            own_nats.kill()
            fault("nats-server SIGKILL")
            await eventually(lambda: asyncio.sleep(0, tally.unavailable), lambda n: n >= 10)
            own_nats.start()
            fault(f"nats-server restarted after {tally.unavailable} 503s")
            await wait_until_done(tally, tally.done + 300)
            admin = Redis.from_url(own_redis.url)
            await admin.flushall()
            await admin.aclose()
            fault("Redis FLUSHALL")
            await wait_until_done(tally, tally.done + 300)
            second.send_signal(signal.SIGKILL)
            fault("projector SIGKILL #2")
            await wait_until_done(tally, tally.done + 300)
            enough.set()
            await load
            load_seconds = time.monotonic() - started
            assert load_seconds < 60, faults
            await converged(http, tally, settings)
            converge_seconds = time.monotonic() - started - load_seconds
        print("\n" + "\n".join(faults))
        print(
            f"chaos: {tally.report()}; load {load_seconds:.1f}s, converged exactly "
            f"{converge_seconds:.1f}s after the load"
        )
    finally:
        procs.stop_all()
