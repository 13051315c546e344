"""Real servers for the tests: store_dir -> nats_server -> nc, and redis_dir -> redis_server -> redis."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import subprocess
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import nats
import pytest
from hypothesis import settings as hypothesis_settings
from nats.aio.client import Client as NATS
from redis.asyncio import Redis

from deploy.credentials import Secrets, ensure_secrets, write_nats_config, write_redis_acl, write_urls
from deploy.servers import NATS_CONF, nats_command, valkey_command, wait_for_port
from deploy.settings import Settings
from tests.helpers import isolated_settings
from tests.ports import free_port

# Examples are judged by what they return, never by how long they took: on 2 cores shared with the
# integration tests' servers, hypothesis's 200 ms deadline failed a correct HyperLogLog decode once.
hypothesis_settings.register_profile("hourglass", deadline=None)
hypothesis_settings.load_profile("hourglass")


@dataclass
class Server:
    """A real server process on a free loopback port."""

    kind: str
    port: int
    data_dir: Path
    proc: subprocess.Popen[bytes]
    settings: Settings = dataclasses.field(default_factory=Settings)
    """Whose roles the server's users are made for (stream, subjects, key prefix)."""

    @functools.cached_property
    def secrets(self) -> Secrets:
        """Auth is on, as `./just up` runs it: users per role, nothing anonymous."""
        found = ensure_secrets(self.data_dir)
        write_urls(found, self.port, self.port)  # the passwords are kept in these files
        return found

    @property
    def url(self) -> str:
        """As the admin, who may do anything: what most tests need."""
        return self.role_url("admin")

    def role_url(self, role: str) -> str:
        if self.kind == "nats":
            return self.secrets.nats_url(role, "127.0.0.1", self.port)
        return self.secrets.redis_url(role, "127.0.0.1", self.port)

    @property
    def anonymous_url(self) -> str:
        scheme = "nats" if self.kind == "nats" else "redis"
        return f"{scheme}://127.0.0.1:{self.port}" + ("/0" if scheme == "redis" else "")

    def command(self) -> list[str]:
        if self.kind == "nats":
            return nats_command(
                self.port, self.data_dir, write_nats_config(self.secrets, self.settings, NATS_CONF)
            )
        return valkey_command(self.port, self.data_dir, write_redis_acl(self.secrets, self.settings))

    def start(self) -> None:
        log = (self.data_dir / f"{self.kind}.log").open("ab")
        self.proc = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT)
        wait_for_port("127.0.0.1", self.port, 20, self.proc)

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        self.proc.kill()
        self.proc.wait()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()


def start_server(kind: str, data_dir: Path, settings: Settings | None = None) -> Server:
    data_dir.mkdir(parents=True, exist_ok=True)
    server = Server(kind, free_port(), data_dir, proc=None, settings=settings or Settings())  # type: ignore[arg-type]
    server.start()
    return server


@contextlib.contextmanager
def running(kind: str, data_dir: Path, settings: Settings | None = None) -> Iterator[Server]:
    server = start_server(kind, data_dir, settings)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def store_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("nats-store")


@pytest.fixture(scope="session")
def nats_server(store_dir: Path) -> Iterator[Server]:
    with running("nats", store_dir) as server:
        yield server


@pytest.fixture(scope="session")
def redis_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("valkey")


@pytest.fixture(scope="session")
def redis_server(redis_dir: Path) -> Iterator[Server]:
    with running("valkey", redis_dir) as server:
        yield server


@pytest.fixture
async def nc(nats_server: Server) -> AsyncIterator[NATS]:
    client = await nats.connect(nats_server.url)
    yield client
    await client.close()


@pytest.fixture
async def redis(redis_server: Server) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_server.url)
    yield client
    await client.aclose()


@pytest.fixture
def settings(nats_server: Server, redis_server: Server) -> Settings:
    return isolated_settings(nats_server.url, redis_server.url)


@pytest.fixture(autouse=True, scope="session")
def _quiet_http_client_logs() -> None:
    import logging

    logging.getLogger("httpx").setLevel(logging.WARNING)
