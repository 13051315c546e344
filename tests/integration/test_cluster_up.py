"""`./just cluster-up` from a clean data dir with its Valkey cluster (3 primaries, 3 replicas on ports
of this test's own): the README's curl lines answer as the README says, then Ctrl-C stops it all."""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from deploy.servers import ROOT, free_port
from tests.helpers import eventually
from tests.integration.test_front_door import QUICK_S, launch, stack_processes, stack_settings
from tests.integration.valkey_cluster import cluster_ports

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]


def readme_curl_block() -> str:
    """The README's first shell block (the one after "With curl:"): writes, reads, a 400, a retry."""
    text = (ROOT / "README.md").read_text()
    block = text.split("With curl:", 1)[1].split("```sh\n", 1)[1].split("```", 1)[0]
    assert "localhost:8080" in block
    return block


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
        script = readme_curl_block().replace("localhost:8080", base)
        done = await asyncio.to_thread(
            subprocess.run, ["bash", "-ec", script], capture_output=True, text=True, timeout=60
        )
        out = done.stdout.split('{"info"', 1)[0]  # up to the OpenAPI document
        assert done.returncode == 0, (out, done.stderr)
        assert len(re.findall(r"HTTP/1.1 204", out)) == 5, out  # 4 writes and the keyed one
        # The GETs right after the POSTs may not see the last one applied yet (the projector runs
        # apart): the hour's text and JSON answers are there; the counts are polled below.
        assert re.search(r"unique_users,\d+\nclicks,\d+\nimpressions,\d+", out), out
        assert '"hour_end":' in out, out
        assert "HTTP/1.1 400 Bad Request" in out, out
        assert "timestamp: must be a plain decimal integer of milliseconds, got '12.5'" in out, out
        # alice, bob and (the keyed retry's) carol: 3 users, 3 clicks, 1 impression, the hour and ranges.
        now_ms = int(time.time() * 1000)
        got = await eventually(
            lambda: http.get("/analytics", params={"timestamp": now_ms}),
            lambda r: r.text == "unique_users,3\nclicks,3\nimpressions,1\n",
        )
        assert got.status_code == 200
        hour = await http.get("/analytics/range", params={"from": now_ms - 4 * 3_600_000, "to": now_ms})
        day = await http.get(
            "/analytics/range", params={"from": now_ms - 7 * 86_400_000, "to": now_ms, "granularity": "day"}
        )
        assert (hour.status_code, day.status_code) == (200, 200), (hour.text, day.text)
        assert hour.text.splitlines()[-1] == "total,3,3,1", hour.text
        assert day.text.splitlines()[-1] == "total,3,3,1", day.text
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
