"""The servers of a benchmark: nats-server and valkey-server on free ports, in a temporary directory."""

from __future__ import annotations

import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

from deploy.servers import nats_command, valkey_command, wait_for_port
from deploy.settings import Settings
from tests.ports import free_port


class Scratch(NamedTuple):
    workdir: Path
    settings: Settings
    """Pointing at the two servers, with the scratch directory as data directory, no admin port."""
    nats_pid: int
    redis_pid: int


@contextmanager
def scratch_servers(prefix: str = "hourglass-bench-") -> Iterator[Scratch]:
    """Both servers running until the block ends; their output goes to `workdir/log`."""
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        workdir = Path(tmp)
        (workdir / "nats").mkdir()
        (workdir / "valkey").mkdir()
        nats_port, redis_port = free_port(), free_port()
        with (workdir / "log").open("ab") as log:
            procs = [
                subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
                for command in (
                    nats_command(nats_port, workdir / "nats"),
                    valkey_command(redis_port, workdir / "valkey"),
                )
            ]
        try:
            wait_for_port("127.0.0.1", nats_port, 20)
            wait_for_port("127.0.0.1", redis_port, 20)
            settings = Settings(
                nats_url=f"nats://127.0.0.1:{nats_port}",
                redis_url=f"redis://127.0.0.1:{redis_port}/0",
                data_dir=workdir,
                admin_port=0,
            )
            yield Scratch(workdir, settings, procs[0].pid, procs[1].pid)
        finally:
            for proc in procs:
                proc.terminate()
                proc.wait(10)


@contextmanager
def own_servers() -> Iterator[tuple[Path, Settings]]:
    """(a scratch directory, settings pointing at the two servers); both are stopped afterwards."""
    with scratch_servers() as scratch:
        yield scratch.workdir, scratch.settings
