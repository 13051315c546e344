"""Two whole stacks on one host, every documented port and directory different: neither disturbs the other."""

from __future__ import annotations

import asyncio
import functools
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from contract.hours import HOUR_MS
from deploy.settings import Settings
from tests.helpers import eventually, settings_env
from tests.integration.conftest import spawn
from tests.integration.workload import parse_text
from tests.ports import free_port

pytestmark = pytest.mark.slow


@pytest.fixture
def stacks(tmp_path: Path) -> Iterator[list[tuple[Settings, Path]]]:
    procs: list[subprocess.Popen[bytes]] = []
    out = []
    for name in ("a", "b"):
        settings = Settings(
            http_port=free_port(),
            admin_port=free_port(),
            http_workers=1,
            nats_url=f"nats://127.0.0.1:{free_port()}",
            redis_url=f"redis://127.0.0.1:{free_port()}/0",
            data_dir=tmp_path / name,
        )
        env = settings_env(settings)
        del env["ANALYTICS_PROJECTOR_METRICS_PORT"]  # as a user would: only the documented ports changed
        log = tmp_path / f"{name}.log"
        procs.append(spawn(["-m", "deploy.supervisor"], env, log))
        out.append((settings, log))
    yield out
    for proc in procs:
        proc.send_signal(2)
    for proc in procs:
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


async def test_two_stacks_run_side_by_side_and_each_counts_only_its_own(
    stacks: list[tuple[Settings, Path]],
) -> None:
    hour = 21
    async with (
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{stacks[0][0].http_port}", timeout=10) as a,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{stacks[1][0].http_port}", timeout=10) as b,
    ):
        for http in (a, b):
            await eventually(functools.partial(http.get, "/readyz"), _ready, timeout=60)
        for i, http in enumerate((a, b)):
            for n in range(3 + i):
                path = f"/analytics?timestamp={hour * HOUR_MS}&user=u{n}&click"
                assert (await http.post(path)).status_code == 204
        for want, http in ((3, a), (4, b)):
            got = await eventually(
                functools.partial(http.get, f"/analytics?timestamp={hour * HOUR_MS}"),
                functools.partial(_shows, (want, want, 0)),
            )
            assert got.status_code == 200
    for settings, _ in stacks:  # each stack's own admin port counts its own requests
        scraped = await asyncio.to_thread(httpx.get, f"http://127.0.0.1:{settings.admin_port}/metrics")
        assert 'route="/analytics",status="204"' in scraped.text
    for _, log in stacks:
        text = await asyncio.to_thread(log.read_text)
        assert text.count("projector | started") == 1, "a projector restarted: " + text[-2000:]
        assert "exited with" not in text


def _shows(expected: tuple[int, int, int], response: httpx.Response) -> bool:
    return response.status_code == 200 and parse_text(response.text) == expected


def _ready(response: httpx.Response) -> bool:
    return response.status_code == 200
