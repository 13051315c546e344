"""Two `./just cluster-up` stacks at once, from clean data dirs, every port of each picked free (3 NATS
nodes and their routes, a Valkey cluster of 3 primaries and 3 replicas and their buses, HTTP, admin):
the first answers the README's curl lines as the README says, the second counts other events, each
counts exactly its own, each binds exactly the ports `deploy.ports` checked, and Ctrl-C stops both."""

from __future__ import annotations

import asyncio
import functools
import random
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from deploy import ports
from deploy.ports import CLUSTER_PORT_OFFSET
from deploy.servers import port_open
from deploy.settings import Settings
from deploy.valkey_cluster import BUS_PORT_OFFSET
from tests.helpers import eventually, settings_env
from tests.integration.conftest import spawn
from tests.integration.readme import run_readme_curl_lines
from tests.integration.test_front_door import (
    QUICK_S,
    assert_one_line,
    stack_processes,
    stack_settings,
    up,
)
from tests.ports import free_port

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def distinct_ports(count: int, offset: int, taken: set[int]) -> list[int]:
    """Free ports p whose p + offset (route or bus port) is free too, none of them in `taken` (which
    grows), below the ephemeral range (an outgoing connection may hold a port there)."""
    found: list[int] = []
    while len(found) < count:
        port = random.randint(11000, 22000)
        pair = {port, port + offset}
        if pair & taken or any(port_open("127.0.0.1", p) for p in pair):
            continue
        taken |= pair
        found.append(port)
    return found


def one_free_port(taken: set[int]) -> int:
    while (port := free_port()) in taken:
        pass
    taken.add(port)
    return port


def cluster_settings(data: Path, taken: set[int], metrics: bool = False) -> Settings:
    """A cluster-up stack whose every port differs from those in `taken` (another stack's); with
    `metrics`, the projector's and the audit's metrics ports are on too (off by default)."""
    nats = distinct_ports(3, CLUSTER_PORT_OFFSET, taken)
    valkey = distinct_ports(6, BUS_PORT_OFFSET, taken)
    return stack_settings(
        data,
        nats_url=",".join(f"nats://127.0.0.1:{p}" for p in nats),
        redis_url=",".join(f"redis://127.0.0.1:{p}/0" for p in valkey),
        http_port=one_free_port(taken),
        admin_port=one_free_port(taken),
        projector_metrics_port=one_free_port(taken) if metrics else 0,
        audit_metrics_port=one_free_port(taken) if metrics else 0,
        stream_replicas=3,
    )


def cluster_up(settings: Settings, log: Path) -> subprocess.Popen[bytes]:
    """What `./just cluster-up` execs, in a session of its own. (Through `just` itself a Ctrl-C ends
    with just's own "error: interrupted by SIGINT" and exit 130 after the supervisor's clean 0.)"""
    return spawn(["-m", "deploy.supervisor", "--cluster"], settings_env(settings), log)


def listening_ports(pids: list[int]) -> set[int]:
    """The TCP ports these processes listen on, from /proc (every socket inode they hold, matched
    against the kernel's tables of listening sockets)."""
    inodes: set[str] = set()
    for pid in pids:
        try:
            fds = list(Path(f"/proc/{pid}/fd").iterdir())
        except (FileNotFoundError, PermissionError):
            continue
        for fd in fds:
            try:
                target = fd.readlink().name
            except (FileNotFoundError, PermissionError):
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    found: set[int] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                found.add(int(fields[1].rsplit(":", 1)[1], 16))
    return found


@dataclass
class Stack:
    settings: Settings
    log: Path
    proc: subprocess.Popen[bytes]
    began: float

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.settings.http_port}"

    async def started(self) -> float:
        await eventually(
            lambda: asyncio.to_thread(self.log.read_text),
            lambda t: "all processes started" in t,
            timeout=150,
        )
        return time.monotonic() - self.began

    async def stopped(self) -> None:
        """Ctrl-C: exit 0 within seconds, no traceback, no process of the stack left."""
        self.proc.send_signal(signal.SIGINT)
        assert await asyncio.to_thread(self.proc.wait, QUICK_S) == 0, self.log.read_text()
        assert "Traceback" not in self.log.read_text()
        assert stack_processes(self.settings.data_dir) == []


def start(
    tmp_path: Path, name: str, taken: set[int], reaper: list[subprocess.Popen[bytes]], metrics: bool = False
) -> Stack:
    data = tmp_path / name / "data"
    assert not data.exists()
    settings = cluster_settings(data, taken, metrics)
    data.parent.mkdir(parents=True)
    log = tmp_path / name / "up.log"
    began = time.monotonic()
    proc = cluster_up(settings, log)
    reaper.append(proc)
    return Stack(settings, log, proc, began)


async def test_two_cluster_up_stacks_side_by_side_each_count_their_own_and_the_readme_curl_lines(
    tmp_path: Path, reaper: list[subprocess.Popen[bytes]]
) -> None:
    taken: set[int] = set()
    readme = start(tmp_path, "readme", taken, reaper)
    other = start(tmp_path, "other", taken, reaper, metrics=True)
    started_in = await asyncio.gather(readme.started(), other.started())
    # A third stack on ports of its own but the first one's data dir is refused, touching nothing.
    same_dir = cluster_settings(readme.settings.data_dir, taken)
    assert_one_line(
        await asyncio.to_thread(up, same_dir, "--cluster"),
        f"{same_dir.data_dir} is in use by another stack (pid {readme.proc.pid})",
        "ANALYTICS_DATA_DIR moves it",
    )
    async with (
        httpx.AsyncClient(base_url=readme.base, timeout=10) as http,
        httpx.AsyncClient(base_url=other.base, timeout=10) as theirs,
    ):
        for client in (http, theirs):
            await eventually(functools.partial(client.get, "/readyz"), _ok, timeout=120)
        ready_in = time.monotonic() - readme.began
        now_ms = int(time.time() * 1000)
        # Both stacks written at once: the README's events into one, other users into the other, in
        # the same hours (now, and 1970-01-01T00 where the README's `timestamp=123` lands).
        readme_now, _ = await asyncio.gather(
            run_readme_curl_lines(readme.base), write_other_events(theirs, now_ms)
        )
        # alice, bob and (the keyed retry's) carol: 3 users, 3 clicks, 1 impression, the hour and ranges.
        await shows(http, readme_now, 3, 3, 1)
        await shows(http, 123, 1, 1, 0)  # kek alone
        # The other stack: 5 users, 4 clicks, 2 impressions now, 2 clicks in 1970; none of the README's.
        await shows(theirs, now_ms, 5, 4, 2)
        await shows(theirs, 123, 2, 2, 0)
    for stack in (readme, other):
        text = stack.log.read_text()
        assert "valkey6 | started" in text, text
        assert "valkey-form | " in text, text
        assert "exited with" not in text, text  # neither disturbed the other: nothing restarted
        # Every port the stack listens on was checked before it started, and no other (the second
        # stack's projector and audit metrics ports included).
        checked = {p.port for p in ports.planned(stack.settings, projectors=1)}
        bound = listening_ports(stack_processes(stack.settings.data_dir))
        assert bound == checked, (sorted(bound - checked), sorted(checked - bound))
    await asyncio.gather(readme.stopped(), other.stopped())
    print(
        f"\ntwo cluster-up stacks from clean data dirs: all started in {started_in[0]:.1f} s and "
        f"{started_in[1]:.1f} s, the README's /readyz 200 in {ready_in:.1f} s"
    )


async def write_other_events(http: httpx.AsyncClient, now_ms: int) -> None:
    writes = [(now_ms, f"u{n}", "click") for n in range(1, 5)]
    writes += [(now_ms, "u1", "impression"), (now_ms, "u5", "impression")]
    writes += [(123, "x1", "click"), (123, "x2", "click")]
    for timestamp, user, kind in writes:
        sent = await http.post(f"/analytics?timestamp={timestamp}&user={user}&{kind}")
        assert sent.status_code == 204, sent.text


async def shows(http: httpx.AsyncClient, timestamp: int, users: int, clicks: int, impressions: int) -> None:
    """The hour of `timestamp` counts exactly these, and so do its hour and day ranges (4 hours and
    7 days up to it)."""
    got = await eventually(
        lambda: http.get("/analytics", params={"timestamp": timestamp}),
        lambda r: r.text == f"unique_users,{users}\nclicks,{clicks}\nimpressions,{impressions}\n",
    )
    assert got.status_code == 200
    hour = await http.get(
        "/analytics/range", params={"from": max(0, timestamp - 4 * 3_600_000), "to": timestamp}
    )
    day = await http.get(
        "/analytics/range",
        params={"from": max(0, timestamp - 7 * 86_400_000), "to": timestamp, "granularity": "day"},
    )
    assert (hour.status_code, day.status_code) == (200, 200), (hour.text, day.text)
    total = f"total,{users},{clicks},{impressions}"
    assert hour.text.splitlines()[-1] == total, hour.text
    assert day.text.splitlines()[-1] == total, day.text


def _ok(response: httpx.Response) -> bool:
    return response.status_code == 200


@pytest.mark.parametrize("which", ["node", "bus"])
def test_a_taken_valkey_node_or_bus_port_is_one_line_naming_it(tmp_path: Path, which: str) -> None:
    settings = cluster_settings(tmp_path / "data", set())
    node = settings.redis_nodes()[4].port
    port, what = (node, "") if which == "node" else (node + BUS_PORT_OFFSET, f" (cluster bus of {node})")
    with socket.socket() as theirs:
        theirs.bind(("127.0.0.1", port))
        theirs.listen()
        began = time.monotonic()
        done = up(settings, "--cluster")
    assert time.monotonic() - began < QUICK_S
    assert_one_line(done, f"port {port}{what} is taken (ANALYTICS_REDIS_URL moves it)")
    assert stack_processes(settings.data_dir) == []
