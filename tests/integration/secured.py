"""Real NATS and Valkey configured as `./just up` configures them (users per role, one secrets directory
for both, nothing anonymous), once per test module, for the least-privilege tests; import the fixtures."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client as NATS

from deploy.settings import Settings
from projector.log.stream_config import ensure_stream
from tests.conftest import Server, running


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("secured")


@pytest.fixture(scope="module")
def servers(data_dir: Path) -> Iterator[tuple[Server, Server]]:
    settings = Settings(data_dir=data_dir)
    with (
        running("nats", data_dir, settings) as nats_server,
        running("valkey", data_dir, settings) as valkey,  # one secrets directory for both
    ):
        yield nats_server, valkey


@pytest.fixture
async def admin(servers: tuple[Server, Server]) -> AsyncIterator[NATS]:
    nc = await nats.connect(servers[0].role_url("admin"))
    await ensure_stream(nc, Settings())
    yield nc
    await nc.close()


async def connect_as(server: Server, role: str) -> tuple[NATS, list[Exception]]:
    """A connection under `role`, and the errors the server sends it (a permission violation)."""
    errors: list[Exception] = []

    async def on_error(exc: Exception) -> None:
        errors.append(exc)

    return await nats.connect(server.role_url(role), error_cb=on_error), errors
