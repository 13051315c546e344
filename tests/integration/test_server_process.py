"""The HTTP server as a process: what it leaves behind on the machine when it stops, or dies."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from contract.settings import Settings
from deploy.servers import ROOT, free_port, wait_for_port
from tests.conftest import Server
from tests.helpers import isolated_settings, settings_env

pytestmark = pytest.mark.slow


def launch(settings: Settings, tmp: Path) -> subprocess.Popen[bytes]:
    env = {**settings_env(settings), "TMPDIR": str(tmp)}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    proc = subprocess.Popen([sys.executable, "-m", "server"], env=env, cwd=ROOT, start_new_session=True)
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
