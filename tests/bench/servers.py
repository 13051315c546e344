"""The servers of a benchmark: nats-server and valkey-server on free ports, in a temporary directory."""

from __future__ import annotations

import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from contract.settings import Settings
from deploy.servers import free_port, nats_command, valkey_command, wait_for_port


@contextmanager
def own_servers() -> Iterator[tuple[Path, Settings]]:
    """(a scratch directory, settings pointing at the two servers); both are stopped afterwards."""
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        nats_port, redis_port = free_port(), free_port()
        procs = [
            subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
            for command in (nats_command(nats_port, workdir / "nats"), valkey_command(redis_port, workdir))
        ]
        try:
            wait_for_port("127.0.0.1", nats_port, 20)
            wait_for_port("127.0.0.1", redis_port, 20)
            yield (
                workdir,
                Settings(
                    nats_url=f"nats://127.0.0.1:{nats_port}", redis_url=f"redis://127.0.0.1:{redis_port}/0"
                ),
            )
        finally:
            for proc in procs:
                proc.terminate()
                proc.wait(10)
