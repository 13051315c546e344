"""TLS to NATS with a throwaway CA made by the test: the stack works over it, and a client that does
not speak TLS gets nothing. (The bundled valkey-server is built without TLS, so Redis TLS, for an
external Redis, is not tested here.)"""

from __future__ import annotations

import functools
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import nats
import nats.errors
import pytest

from contract.hours import HOUR_MS
from deploy.credentials import prepare
from deploy.servers import nats_command, valkey_command, wait_for_port
from deploy.settings import Settings
from tests.helpers import eventually
from tests.integration.conftest import production_stack
from tests.ports import free_port


def make_certificates(directory: Path) -> tuple[Path, Path, Path]:
    """A CA, and a certificate it signed for 127.0.0.1: (ca, certificate, key)."""

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True)

    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "1", "-subj", "/CN=test CA")
    openssl("req", *ec, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1")
    (directory / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    openssl(
        "x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
        "-out", "server.pem", "-days", "1", "-extfile", "san.ext",
    )  # fmt: skip
    return directory / "ca.pem", directory / "server.pem", directory / "server.key"


@pytest.fixture
def tls_settings(tmp_path: Path) -> Iterator[Settings]:
    ca, cert, key = make_certificates(tmp_path)
    nats_port, redis_port = free_port(), free_port()
    settings = Settings(data_dir=tmp_path, stream_name="TLS", subject_prefix="tls.events", key_prefix="tls")
    prepared = prepare(tmp_path, settings, nats_port, redis_port)
    config = prepared.nats_config
    with config.open("a") as f:
        f.write(f'\ntls {{\n  cert_file: "{cert}"\n  key_file: "{key}"\n}}\n')
    valkey = valkey_command(redis_port, tmp_path, prepared.redis_acl)
    (tmp_path / "js").mkdir()
    log = (tmp_path / "servers.log").open("wb")
    procs = [
        subprocess.Popen(
            nats_command(nats_port, tmp_path / "js", config), stdout=log, stderr=subprocess.STDOUT
        ),
        subprocess.Popen(valkey, stdout=log, stderr=subprocess.STDOUT),
    ]
    try:
        wait_for_port("127.0.0.1", nats_port, 20, procs[0])
        wait_for_port("127.0.0.1", redis_port, 20, procs[1])
        yield settings.replace(
            nats_url=f"tls://127.0.0.1:{nats_port}",
            redis_url=f"redis://127.0.0.1:{redis_port}/0",
            tls_ca_file=str(ca),
        ).with_credentials("admin")
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(10)


PATH = f"/analytics?timestamp={5 * HOUR_MS}"


async def test_the_stack_runs_over_tls_and_plain_clients_get_nothing(tls_settings: Settings) -> None:
    async for http in production_stack(tls_settings):
        for user in ("a", "b"):
            assert (await http.post(f"{PATH}&user={user}&click")).status_code == 204
        shown = await eventually(functools.partial(http.get, PATH), lambda r: "clicks,2" in r.text)
        assert "unique_users,2" in shown.text
    plain_nats = tls_settings.nats_url.replace("tls://", "nats://")
    with pytest.raises((nats.errors.Error, OSError, ssl.SSLError)):
        await nats.connect(plain_nats, allow_reconnect=False, max_reconnect_attempts=0, connect_timeout=2)
    untrusting = tls_settings.replace(tls_ca_file="")  # the system's CAs only: the test CA is not one
    options = {**untrusting.nats_options("untrusting"), "allow_reconnect": False, "max_reconnect_attempts": 0}
    with pytest.raises((nats.errors.Error, OSError, ssl.SSLError)):
        await nats.connect(**options)
