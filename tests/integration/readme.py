"""The README's curl lines, run as written against a stack's published port (`./just cluster-up` and the
compose cluster), and the answers the README promises for them."""

from __future__ import annotations

import asyncio
import re
import subprocess
import time

import httpx

from deploy.servers import ROOT
from tests.helpers import eventually
from tests.integration.workload import Truth

DAY_MS = 86_400_000


def readme_curl_block() -> str:
    """The README's first shell block (the one after "With curl:"): writes, reads, a 400, a retry."""
    text = (ROOT / "README.md").read_text()
    block = text.split("With curl:", 1)[1].split("```sh\n", 1)[1].split("```", 1)[0]
    assert "localhost:8080" in block
    return block


WARM_UP_MS = 365 * DAY_MS
"""1971-01-01T00: an hour no README line reads, for the write that shows a fresh stack takes writes."""


async def takes_writes(base: str, timeout: float = 60) -> None:
    """Polls until a POST is acknowledged: on a cluster stack just up, /readyz was 200 while the first
    PubAck still timed out (a 503, "retry later"; seen in CI with the cores shared), and the README's
    lines do not retry."""
    async with httpx.AsyncClient(base_url=base, timeout=10) as http:
        await eventually(
            lambda: http.post(f"/analytics?timestamp={WARM_UP_MS}&user=warm-up&impression"),
            lambda r: r.status_code == 204,
            timeout,
        )


async def run_readme_curl_lines(base: str) -> int:
    """Runs the block with `localhost:8080` replaced by `base` once the stack takes writes, and checks
    what it printed; returns the block's own `$now` (milliseconds), the timestamp of its events."""
    await takes_writes(base)
    script = readme_curl_block().replace("localhost:8080", base) + '\necho "readme-now=$now"\n'
    done = await asyncio.to_thread(
        subprocess.run, ["bash", "-ec", script], capture_output=True, text=True, timeout=60
    )
    out = done.stdout.split('{"info"', 1)[0]  # up to the OpenAPI document
    assert done.returncode == 0, (out, done.stderr)
    assert len(re.findall(r"HTTP/1.1 204", out)) == 5, out  # 4 writes and the keyed one
    # The GETs right after the POSTs may not see the last one applied yet (the projector runs
    # apart): the hour's text and JSON answers are there; the counts are polled after.
    assert re.search(r"unique_users,\d+\nclicks,\d+\nimpressions,\d+", out), out
    assert '"hour_end":' in out, out
    assert "HTTP/1.1 400 Bad Request" in out, out
    assert "timestamp: must be a plain decimal integer of milliseconds, got '12.5'" in out, out
    now = re.search(r"readme-now=(\d+)", done.stdout)
    assert now, done.stdout[-500:]
    return int(now.group(1))


def readme_truth(now_ms: int) -> Truth:
    """What the block stores in `$now`'s hour (its 1970 event aside): alice, bob and the keyed carol."""
    truth = Truth()
    for user, kind in (("alice", "click"), ("bob", "impression"), ("bob", "click"), ("carol", "click")):
        truth.add(now_ms, user, kind)
    return truth


async def readme_counts_hold(http: httpx.AsyncClient, now_ms: int) -> None:
    """On a stack that had nothing else written: 3 users, 3 clicks, 1 impression in the hour, and the
    same totals over the last hours and days."""
    got = await eventually(
        lambda: http.get("/analytics", params={"timestamp": now_ms}),
        lambda r: r.text == "unique_users,3\nclicks,3\nimpressions,1\n",
    )
    assert got.status_code == 200
    until = max(now_ms, int(time.time() * 1000))
    hour = await http.get("/analytics/range", params={"from": until - 4 * 3_600_000, "to": until})
    day = await http.get(
        "/analytics/range", params={"from": until - 7 * DAY_MS, "to": until, "granularity": "day"}
    )
    assert (hour.status_code, day.status_code) == (200, 200), (hour.text, day.text)
    assert hour.text.splitlines()[-1] == "total,3,3,1", hour.text
    assert day.text.splitlines()[-1] == "total,3,3,1", day.text
