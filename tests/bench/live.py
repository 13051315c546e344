"""`./just bench-live`: how long from a POST's 204 until `/analytics/live` pushes the new count.

Run: ./just bench-live [--samples 200]   (own nats-server and valkey-server with a user per role,
`python -m server` and `python -m projector run` as processes, on free ports)

One client holds the live stream open; another POSTs one click into the current hour, then waits for
the push that shows it. Samples are spaced past the stream's coalescing interval, so each measures a
push, not the wait for the next slot.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import nats

from contract.hours import system_now_ms
from deploy.credentials import prepare
from deploy.servers import ROOT, nats_command, valkey_command, wait_for_port
from deploy.settings import Settings
from projector.log.stream_config import ensure_stream
from tests.helpers import settings_env
from tests.ports import free_port


async def measure(base: str, samples: int) -> list[float]:
    now = system_now_ms()
    took: list[float] = []
    async with (
        httpx.AsyncClient(base_url=base, timeout=10) as http,
        http.stream("GET", "/analytics/live") as live,
    ):
        lines = live.aiter_lines()

        async def next_clicks() -> int:
            async for line in lines:
                if line.startswith("data: "):
                    return int(json.loads(line[6:])["clicks"])
            raise RuntimeError("the live stream ended")

        clicks = await next_clicks()
        for i in range(samples):
            response = await http.post(f"/analytics?timestamp={now}&user=live-bench-{i}&click")
            assert response.status_code == 204
            acked = time.perf_counter()
            while clicks <= i:
                clicks = await asyncio.wait_for(next_clicks(), 5)
            took.append((time.perf_counter() - acked) * 1000)
            await asyncio.sleep(0.3)  # past the 0.25 s coalescing interval
    return took


def main() -> None:
    parser = argparse.ArgumentParser(prog="./just bench-live", description=__doc__)
    parser.add_argument("--samples", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        nats_port, redis_port, http_port = free_port(), free_port(), free_port()
        settings = Settings(
            nats_url=f"nats://127.0.0.1:{nats_port}",
            redis_url=f"redis://127.0.0.1:{redis_port}/0",
            http_port=http_port,
            admin_port=0,
            data_dir=workdir,
        )
        (workdir / "js").mkdir()
        env = settings_env(settings)
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)

        def start(command: list[str], environment: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
            return subprocess.Popen(
                command, env=environment, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT
            )

        prepared = prepare(workdir, settings, nats_port, redis_port)
        found = prepared.secrets
        procs = [
            start(nats_command(nats_port, workdir / "js", prepared.nats_config)),
            start(valkey_command(redis_port, workdir, prepared.redis_acl)),
        ]
        try:
            wait_for_port("127.0.0.1", nats_port, 20)
            wait_for_port("127.0.0.1", redis_port, 20)

            async def make_stream() -> None:
                nc = await nats.connect(found.nats_url("admin", "127.0.0.1", nats_port))
                await ensure_stream(nc, settings)
                await nc.close()

            asyncio.run(make_stream())
            procs.append(start([sys.executable, "-m", "server"], env))
            procs.append(start([sys.executable, "-m", "projector", "run"], env))
            wait_for_port("127.0.0.1", http_port, 30)
            base = f"http://127.0.0.1:{http_port}"
            deadline = time.monotonic() + 30
            while httpx.get(f"{base}/readyz").status_code != 200:
                if time.monotonic() > deadline:
                    raise TimeoutError("the stack did not get ready")
                time.sleep(0.1)
            took = sorted(asyncio.run(measure(base, args.samples)))
        finally:
            for proc in reversed(procs):
                proc.terminate()
                proc.wait(10)
    p99 = took[min(len(took) - 1, int(0.99 * len(took)))]
    print(f"\n204 to pushed on /analytics/live, {len(took)} samples, {os.cpu_count()} cores:")
    print(f"p50 {statistics.median(took):.1f} ms, p99 {p99:.1f} ms, max {took[-1]:.1f} ms")


if __name__ == "__main__":
    main()
