"""Durable mode (ANALYTICS_NATS_SYNC_ALWAYS): the nats-server `./just up` runs fsyncs before each PubAck."""

from __future__ import annotations

import subprocess
from pathlib import Path

import httpx
import pytest

from deploy.credentials import prepare
from deploy.servers import nats_command, wait_for_port
from deploy.settings import Settings
from tests.ports import free_port


@pytest.mark.parametrize("durable", [True, False])
def test_the_durable_setting_makes_jetstream_sync_before_every_puback(tmp_path: Path, durable: bool) -> None:
    port, monitor = free_port(), free_port()
    config = prepare(tmp_path, Settings(nats_sync_always=durable), port, free_port()).nats_config
    argv = [*nats_command(port, tmp_path / "store", config), "-m", str(monitor)]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        wait_for_port("127.0.0.1", monitor, 20, proc)
        jetstream = httpx.get(f"http://127.0.0.1:{monitor}/varz", timeout=5).json()["jetstream"]["config"]
        assert jetstream.get("sync_always", False) is durable
    finally:
        proc.terminate()
        proc.wait(10)
