"""The HTTP server as a process: what it leaves behind on the machine when it stops, or dies, and what it
says while NATS is not there."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import httpx
import pytest

from deploy.servers import ROOT, wait_for_port
from deploy.settings import Settings
from tests.conftest import Server
from tests.helpers import isolated_settings, settings_env
from tests.ports import free_port

pytestmark = pytest.mark.slow


def spawn(settings: Settings, tmp: Path, output: IO[bytes] | None = None) -> subprocess.Popen[bytes]:
    env = {**settings_env(settings), "TMPDIR": str(tmp)}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    return subprocess.Popen(
        [sys.executable, "-m", "server"],
        env=env,
        cwd=ROOT,
        stdout=output,
        stderr=output,
        start_new_session=True,
    )


def launch(settings: Settings, tmp: Path) -> subprocess.Popen[bytes]:
    proc = spawn(settings, tmp)
    wait_for_port("127.0.0.1", settings.http_port, 30, proc)
    assert httpx.get(f"http://127.0.0.1:{settings.http_port}/healthz").status_code == 200
    return proc


def metrics_dirs(tmp: Path) -> list[Path]:
    return sorted(tmp.glob("hourglass-metrics-*"))


@pytest.fixture
def started() -> Iterator[list[subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for proc in procs:  # whatever the test did, nothing outlives it
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_the_metrics_directory_goes_with_the_server(
    nats_server: Server, redis_server: Server, tmp_path: Path, started: list[subprocess.Popen[bytes]]
) -> None:
    settings = isolated_settings(nats_server.url, redis_server.url, http_port=free_port(), http_workers=1)

    def start(settings: Settings, tmp: Path) -> subprocess.Popen[bytes]:
        proc = launch(settings, tmp)
        started.append(proc)
        return proc

    proc = start(settings, tmp_path)
    assert len(metrics_dirs(tmp_path)) == 1
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0
    assert metrics_dirs(tmp_path) == []

    # Killed outright it cannot clean up; the next server removes what a dead one left.
    proc = start(settings, tmp_path)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(10)
    assert len(metrics_dirs(tmp_path)) == 1
    proc = start(settings.replace(http_port=free_port()), tmp_path)
    assert len(metrics_dirs(tmp_path)) == 1
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0
    assert metrics_dirs(tmp_path) == []


def test_without_nats_it_starts_and_says_each_try_in_one_line(
    tmp_path: Path, started: list[subprocess.Popen[bytes]]
) -> None:
    password = "hunter2secret"
    nats_url = f"nats://hg:{password}@127.0.0.1:{free_port()}"
    settings = isolated_settings(nats_url, f"redis://127.0.0.1:{free_port()}/0", http_workers=1)
    said = tmp_path / "said.log"
    with said.open("wb") as out:
        proc = spawn(settings, tmp_path, out)
    started.append(proc)
    until = time.monotonic() + 60
    while said.read_text().count("(hourglass-http): ") < 2:  # a worker's connection, trying
        assert time.monotonic() < until, said.read_text()
        assert proc.poll() is None, said.read_text()
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0
    text = said.read_text()
    assert "Traceback" not in text
    assert password not in text
    where = nats_url.replace(password, "***")
    assert f"hourglass http: NATS at {where} not reachable yet (ConnectionRefusedError" in text
    tries = [line for line in text.splitlines() if "(hourglass-http): " in line]
    assert all(line.startswith("WARNING") and f"NATS at {where} (hourglass-http): " in line for line in tries)
