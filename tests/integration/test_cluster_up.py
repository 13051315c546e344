"""`./just cluster-up` from a clean data dir with its Valkey cluster (3 primaries, 3 replicas on ports
of this test's own): the README's curl lines answer as the README says, then Ctrl-C stops it all."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from deploy.servers import free_port
from tests.helpers import eventually
from tests.integration.readme import readme_counts_hold, run_readme_curl_lines
from tests.integration.test_front_door import QUICK_S, launch, stack_processes, stack_settings
from tests.integration.valkey_cluster import cluster_ports

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]


async def test_cluster_up_from_a_clean_data_dir_answers_the_readme_curl_lines(
    tmp_path: Path, reaper: list[subprocess.Popen[bytes]]
) -> None:
    nats_url = ",".join(f"nats://127.0.0.1:{free_port()}" for _ in range(3))
    redis_url = ",".join(f"redis://127.0.0.1:{port}/0" for port in cluster_ports(6))
    data = tmp_path / "data"
    assert not data.exists()
    settings = stack_settings(data, nats_url=nats_url, redis_url=redis_url, stream_replicas=3)
    log = tmp_path / "up.log"
    began = time.monotonic()
    proc = launch(settings, log, "--cluster")
    reaper.append(proc)
    await eventually(
        lambda: asyncio.to_thread(log.read_text), lambda t: "all processes started" in t, timeout=120
    )
    started_in = time.monotonic() - began
    base = f"http://127.0.0.1:{settings.http_port}"
    async with httpx.AsyncClient(base_url=base, timeout=10) as http:
        await eventually(lambda: http.get("/readyz"), lambda r: r.status_code == 200, timeout=120)
        ready_in = time.monotonic() - began
        # alice, bob and (the keyed retry's) carol: 3 users, 3 clicks, 1 impression, the hour and ranges.
        await readme_counts_hold(http, await run_readme_curl_lines(base))
    text = log.read_text()
    assert "valkey6 | started" in text, text
    assert "valkey-form | " in text, text
    proc.send_signal(signal.SIGINT)
    assert await asyncio.to_thread(proc.wait, QUICK_S) == 0, log.read_text()
    assert "Traceback" not in log.read_text()
    assert stack_processes(data) == []
    print(
        f"\ncluster-up from a clean data dir: all started in {started_in:.1f} s, "
        f"/readyz 200 in {ready_in:.1f} s"
    )
