"""Fixtures for integration tests: the in-process app and projector, wired to the real servers."""

from __future__ import annotations

import asyncio
import functools
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import nats
import pytest
from nats.aio.client import Client as NATS
from redis.asyncio import Redis

from contract import schema
from contract.keys import Keys
from deploy.projections_client import connect
from deploy.servers import ROOT
from deploy.settings import Settings
from projector.audit.records import Records
from projector.live.balancer import Projector, run_projector
from projector.log.stream_config import ensure_stream
from server.app import Clients, create_app
from tests.conftest import Server, running
from tests.helpers import eventually, isolated_settings, serve, settings_env
from tests.integration.valkey_cluster import valkey_cluster  # noqa: F401  (a fixture)
from tests.ports import free_port


async def make_stream(settings: Settings, timeout: float = 20) -> None:
    """What `./just up` does first: the stream's one owner creates it."""
    nc = await nats.connect(**settings.nats_options("test-admin"))
    try:
        await eventually(lambda: ensure_stream(nc, settings), lambda _: True, timeout)
    finally:
        await nc.close()


@dataclass(frozen=True)
class Roles:
    """One stack's settings per process role, each with only its role's credentials (as `./just up`)."""

    admin: Settings
    http: Settings
    projector: Settings


def with_roles(settings: Settings, nats_server: Server, redis_server: Server) -> Roles:
    """Servers started with `settings`' names (so their users are scoped to them): the HTTP process
    appends as `ingest` and reads as `api`, the projector is `projector`, the test itself `admin`."""
    return Roles(
        admin=settings.replace(
            nats_url=nats_server.role_url("admin"), redis_url=redis_server.role_url("admin")
        ),
        http=settings.replace(
            nats_url=nats_server.role_url("ingest"),
            nats_api_url=nats_server.role_url("api"),
            redis_url=redis_server.role_url("api"),
        ),
        projector=settings.replace(
            nats_url=nats_server.role_url("projector"), redis_url=redis_server.role_url("projector")
        ),
    )


def roles_on(nats_server: Server, redis_url: Callable[[str], str], **overrides: object) -> Roles:
    """`with_roles` for any Redis: `redis_url(role)` is the role's ANALYTICS_REDIS_URL (one node's, or
    every node of a cluster, as `ValkeyCluster.role_url` gives); names as `scoped_settings`."""
    admin = scoped_settings(nats_server, nats_server, **overrides).replace(redis_url=redis_url("admin"))
    return Roles(
        admin=admin,
        http=admin.replace(
            nats_url=nats_server.role_url("ingest"),
            nats_api_url=nats_server.role_url("api"),
            redis_url=redis_url("api"),
        ),
        projector=admin.replace(nats_url=nats_server.role_url("projector"), redis_url=redis_url("projector")),
    )


def scoped_settings(nats_server: Server, redis_server: Server, **overrides: object) -> Settings:
    """Settings for servers of a test's own with the default names, to which `./just up`'s role users
    are scoped (see `with_roles`); the test's connections there are admin."""
    defaults = Settings()
    return isolated_settings(nats_server.url, redis_server.url, **overrides).replace(
        stream_name=defaults.stream_name,
        subject_prefix=defaults.subject_prefix,
        key_prefix=defaults.key_prefix,
    )


async def production_stack(
    settings: Settings, ready_timeout: float = 20, roles: Roles | None = None
) -> AsyncIterator[httpx.AsyncClient]:
    """App and projector as in production: each owns its connections and must ride out faults. With
    `roles`, each runs under its own role's credentials, so a permission it lacks fails the test."""
    await make_stream(roles.admin if roles else settings, ready_timeout)
    app_settings = roles.http if roles else settings
    projector_settings = roles.projector if roles else settings
    async for http in serve(create_app(app_settings)):
        nc = await nats.connect(**projector_settings.nats_options("test-projector"))
        redis = connect(projector_settings)
        stop = asyncio.Event()
        through = Records(redis, Keys(projector_settings.key_prefix)).through
        running = run_projector(projector_settings, nc, redis, stop, audited_through=through)
        task = asyncio.create_task(running)
        await eventually(
            functools.partial(http.get, "/readyz"), lambda r: r.status_code == 200, ready_timeout
        )
        yield http
        stop.set()
        await task
        await nc.close()
        await redis.aclose()


@pytest.fixture
def own_nats(tmp_path: Path) -> Iterator[Server]:
    """A nats-server of this test's own, for tests that kill it."""
    with running("nats", tmp_path / "nats") as server:
        yield server


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[Server]:
    with running("valkey", tmp_path / "valkey") as server:
        yield server


@pytest.fixture
async def client(settings: Settings, nc: NATS, redis: Redis) -> AsyncIterator[httpx.AsyncClient]:
    await ensure_stream(nc, settings)
    async for http in serve(create_app(settings, Clients(nc=nc, redis=redis))):
        yield http


@pytest.fixture
async def projector(settings: Settings, client: httpx.AsyncClient, redis: Redis) -> AsyncIterator[None]:
    """A live projector over all partitions, running beside the app (the stream exists by now)."""
    own = await nats.connect(settings.nats_url)
    stop = asyncio.Event()
    through = Records(redis, Keys(settings.key_prefix)).through
    task = asyncio.create_task(run_projector(settings, own, redis, stop, audited_through=through))
    yield
    stop.set()
    await task
    await own.close()


class Projectors:
    """Projectors started and stopped inside a test, each on its own NATS connection."""

    def __init__(self, settings: Settings, redis: Redis) -> None:
        self.settings, self.redis = settings, redis
        self.members: list[tuple[asyncio.Event, asyncio.Task[None], NATS]] = []

    async def start(self, decoder: Callable[[bytes], schema.AnyBatch] = schema.decode) -> None:
        own = await nats.connect(self.settings.nats_url)
        stop = asyncio.Event()
        through = Records(self.redis, Keys(self.settings.key_prefix)).through
        projector = Projector(self.settings, own, self.redis, decoder=decoder, audited_through=through)
        self.members.append((stop, asyncio.create_task(projector.run(stop)), own))

    async def stop_all(self) -> None:
        for stop, task, own in self.members:
            stop.set()
            await task
            await own.close()
        self.members.clear()


@pytest.fixture
async def projectors(
    settings: Settings, redis: Redis, client: httpx.AsyncClient
) -> AsyncIterator[Projectors]:
    started = Projectors(settings, redis)
    yield started
    await started.stop_all()


@pytest.fixture(scope="module")
def http_server(
    nats_server: Server, redis_server: Server, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, Settings]]:
    """The real thing: granian in a subprocess, so the HTTP parser is under test too."""
    s = isolated_settings(nats_server.url, redis_server.url, http_port=free_port(), http_workers=1)
    make_stream = [sys.executable, "-m", "projector", "stream"]
    subprocess.run(make_stream, env=settings_env(s), cwd=ROOT, check=True, timeout=60)
    log = tmp_path_factory.mktemp("http") / "server.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "server"],
        env=settings_env(s),
        cwd=ROOT,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{s.http_port}"
    try:
        wait_ready(base, proc)
        yield base, s
    finally:
        proc.terminate()
        proc.wait(10)


def wait_ready(base: str, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    with httpx.Client(base_url=base) as probe:
        while time.monotonic() < deadline:
            assert proc.poll() is None, "server exited"
            try:
                ready = probe.get("/readyz")
                # No projector runs here: everything else must be ready.
                problems = [line for line in ready.text.splitlines() if not line.startswith("projector:")]
                if ready.status_code == 200 or (ready.status_code == 503 and not problems):
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
    raise AssertionError("server not ready")


def spawn(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """`python <args>` in a session of its own (so `reaper` can kill all it started), output to `log`."""
    return subprocess.Popen(
        [sys.executable, *args],
        env=env,
        cwd=ROOT,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


@pytest.fixture
def reaper() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Processes a test appends here are SIGKILLed with their whole session if still running at its end."""
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _required(why: str, present: bool) -> None:
    """Skip where the machine cannot do it; in CI, which can, fail instead."""
    if present:
        return
    if os.environ.get("CI"):
        pytest.fail(f"{why}, and CI has it")
    pytest.skip(why)


@pytest.fixture(scope="session")
def root() -> None:
    """The fault harness's network namespaces, nftables rules and FUSE mounts need root."""
    _required("network namespaces, nftables and FUSE mounts need root", os.geteuid() == 0)


@pytest.fixture(scope="session")
def fuse(root: None) -> None:
    """LazyFS (tests/faults/lazyfs.py) needs /dev/fuse and fusermount3 (Debian's fuse3)."""
    _required("FUSE needs /dev/fuse", os.path.exists("/dev/fuse"))
    _required("FUSE needs fusermount3 (Debian's fuse3)", shutil.which("fusermount3") is not None)
