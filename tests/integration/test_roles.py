"""Least privilege against real servers, configured as `./just up` configures them: nobody anonymous,
and each role refused what it does not need."""

from __future__ import annotations

import asyncio
import stat
import subprocess
import sys
from pathlib import Path

import nats
import nats.errors
import pytest
import redis.exceptions
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from redis.asyncio import Redis

from contract.hours import changes_subject
from contract.schema import Event, Kind, batch_of, encode
from deploy.credentials import NATS_ROLES, REDIS_ROLES, ensure_secrets, write_urls
from deploy.servers import ROOT
from deploy.settings import Settings
from tests.conftest import Server
from tests.helpers import eventually, settings_env
from tests.integration import secured
from tests.integration.secured import connect_as

admin, data_dir, servers = secured.admin, secured.data_dir, secured.servers  # the fixtures, in one place


async def test_anonymous_clients_are_refused_by_nats_and_redis(servers: tuple[Server, Server]) -> None:
    nats_server, valkey = servers
    with pytest.raises(nats.errors.Error):
        await nats.connect(nats_server.anonymous_url, allow_reconnect=False, max_reconnect_attempts=0)
    anonymous = Redis.from_url(valkey.anonymous_url)
    with pytest.raises(redis.exceptions.AuthenticationError):
        await anonymous.ping()
    await anonymous.aclose()


async def test_ingest_may_append_events_but_not_purge_delete_or_announce(
    servers: tuple[Server, Server], admin: NATS
) -> None:
    settings = Settings()
    nc, errors = await connect_as(servers[0], "ingest")
    js = nc.jetstream(timeout=1)
    batch = encode(batch_of((Event(1, "u", Kind.CLICK),)))
    ack = await js.publish(f"{settings.subject_prefix}.1970010100.0", batch)
    assert ack.seq >= 1
    with pytest.raises(nats.errors.TimeoutError):  # the request never reaches JetStream
        await js.purge_stream(settings.stream_name)
    with pytest.raises(nats.errors.TimeoutError):
        await js.delete_stream(settings.stream_name)
    await nc.publish(changes_subject(settings.stream_name), b'{"hours":null}')
    await nc.flush()
    found = await eventually(lambda: _async(errors), lambda e: len(e) >= 3)
    assert all("permissions violation" in str(e).lower() for e in found), found
    info = await admin.jetstream().stream_info(settings.stream_name)
    assert info.state.messages >= 1  # neither purged nor deleted
    await nc.close()


async def test_the_api_may_read_but_never_write_redis(servers: tuple[Server, Server]) -> None:
    valkey = servers[1]
    admin = Redis.from_url(valkey.role_url("admin"))
    await admin.set("hg:{p0}:gen", 1)
    api = Redis.from_url(valkey.role_url("api"))
    assert await api.get("hg:{p0}:gen") == b"1"
    script = api.register_script("return redis.call('GET', KEYS[1])")  # read-only scripts run
    assert await script(keys=["hg:{p0}:gen"]) == b"1"
    for forbidden in (api.flushall(), api.set("hg:{p0}:gen", 2), api.delete("hg:{p0}:gen")):
        with pytest.raises(redis.exceptions.NoPermissionError):
            await forbidden
    with pytest.raises(redis.exceptions.ResponseError, match="no permissions"):
        await api.eval("return redis.call('SET', 'hg:{p0}:gen', 3)", 0)
    with pytest.raises(redis.exceptions.NoPermissionError):
        await api.get("another:key")  # only its key prefix
    projector = Redis.from_url(valkey.role_url("projector"))
    await projector.set("hg:x", 1)  # the projector writes...
    with pytest.raises(redis.exceptions.NoPermissionError):
        await projector.flushall()  # ...but never wipes
    assert await admin.get("hg:{p0}:gen") == b"1"
    for client in (admin, api, projector):
        await client.aclose()


async def test_the_api_reads_notices_and_snapshots_but_cannot_append_or_forge(
    servers: tuple[Server, Server], admin: NATS
) -> None:
    settings = Settings()
    nc, errors = await connect_as(servers[0], "api")
    notices: asyncio.Queue[bytes] = asyncio.Queue()

    async def on_notice(msg: Msg) -> None:
        await notices.put(msg.data)

    await nc.subscribe(changes_subject(settings.stream_name), cb=on_notice)
    await nc.flush()

    async def announced() -> bytes:
        await admin.publish(changes_subject(settings.stream_name), b'{"hours":[1]}')
        await admin.flush()
        return await asyncio.wait_for(notices.get(), 0.5)

    assert await eventually(announced, lambda got: got == b'{"hours":[1]}') == b'{"hours":[1]}'
    kv = await nc.jetstream().key_value(f"{settings.stream_name}_SNAPSHOTS")
    assert kv is not None
    await nc.publish(f"{settings.subject_prefix}.1970010100.0", b"forged")
    await nc.publish(changes_subject(settings.stream_name), b"forged")
    await nc.flush()
    await eventually(lambda: _async(errors), lambda e: len(e) >= 2)
    await nc.close()


def test_secrets_are_private_and_stable(servers: tuple[Server, Server], data_dir: Path) -> None:
    directory = data_dir / "secrets"
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    files = list(directory.iterdir())
    names = {f.name for f in files}
    assert {f"nats-{r}.url" for r in NATS_ROLES} <= names
    assert {f"redis-{r}.url" for r in REDIS_ROLES} <= names
    assert all(stat.S_IMODE(f.stat().st_mode) == 0o600 for f in files)
    before = {f.name: f.read_text() for f in files if f.name.endswith(".url")}
    ensure_secrets(data_dir)  # a restart
    assert {f.name: f.read_text() for f in files if f.name.endswith(".url")} == before


def test_recipes_find_their_credentials_with_no_extra_step(
    servers: tuple[Server, Server], data_dir: Path
) -> None:
    nats_server, valkey = servers
    settings = Settings(data_dir=data_dir, nats_url=nats_server.anonymous_url, redis_url=valkey.anonymous_url)
    env = settings_env(settings)
    for command in (["stream"], ["inspect"]):
        done = subprocess.run(
            [sys.executable, "-m", "projector", *command], env=env, cwd=ROOT, capture_output=True, timeout=60
        )
        assert done.returncode == 0, done.stderr.decode()[-2000:]
        passwords = [*ensure_secrets(data_dir).nats.values(), *ensure_secrets(data_dir).redis.values()]
        assert not any(p.encode() in done.stdout + done.stderr for p in passwords)


async def _async(errors: list[Exception]) -> list[Exception]:
    return list(errors)


def test_deleting_a_url_file_rotates_that_credential_only(tmp_path: Path) -> None:
    first = ensure_secrets(tmp_path)
    write_urls(first, 4222, 6379)
    (tmp_path / "secrets" / "nats-api.url").unlink()
    second = ensure_secrets(tmp_path)
    assert second.nats["api"] != first.nats["api"]
    assert {r: p for r, p in second.nats.items() if r != "api"} == {
        r: p for r, p in first.nats.items() if r != "api"
    }
    assert second.redis == first.redis
