"""Runs the HTTP app on granian: `python -m server` (settings from ANALYTICS_* variables)."""

from __future__ import annotations

import asyncio
import errno
import gc
import logging
import os
import shutil
import socket
import sys
import tempfile
from pathlib import Path
from typing import NoReturn

import nats
from granian import Granian
from granian.constants import HTTPModes, Interfaces
from granian.http import HTTP1Settings
from litestar.types import ASGIApp

from contract.stream import partition_mismatch
from deploy.backoff import NatsLog, reason
from deploy.projections_client import check_cluster
from deploy.settings import Settings, SettingsError, redacted

EX_CONFIG = 78
"""Exit code when the port is taken: `./just up` (deploy.ports.EX_CONFIG) stops rather than restarts."""


def app_from_env() -> ASGIApp:
    """Granian's factory: each worker process reads its settings and builds its own app."""
    from server.app import create_app

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    settings = Settings.from_env(role="http")
    app = create_app(settings)
    if settings.http_gc_freeze:
        # Everything built so far (modules, the app) lives as long as the worker: out of the
        # collector's reach, a full collection under load no longer walks it.
        gc.collect()
        gc.freeze()
    return app


def main() -> None:
    try:
        settings = Settings.from_env(role="http")
    except SettingsError as exc:
        _refuse_configuration(exc)
    if _port_taken(settings.http_host, settings.http_port):
        _refuse_port(settings.http_port)
    problem = asyncio.run(_partition_problem(settings))
    if problem:
        raise SystemExit(f"hourglass http: refusing to start: {problem}")
    try:
        asyncio.run(check_cluster(settings))
    except SettingsError as exc:  # listed nodes that are not one whole cluster: a configuration error
        _refuse_configuration(exc)
    own_directory = _prepare_multiprocess_metrics()
    # Only now: prometheus_client picks its multiprocess mode when first imported, and the workers
    # inherit this process's modules.
    from server.admin import serve_admin

    admin = serve_admin(settings.admin_host, settings.admin_port) if settings.admin_port else None
    try:
        _serve(settings)
    finally:
        if admin is not None:
            admin.shutdown()
        if own_directory is not None:
            shutil.rmtree(own_directory, ignore_errors=True)


def _refuse_configuration(exc: SettingsError) -> NoReturn:
    print(f"hourglass http: configuration: {exc}", file=sys.stderr, flush=True)
    raise SystemExit(EX_CONFIG) from None


def _port_taken(host: str, port: int) -> bool:
    """Bound as granian binds it (SO_REUSEADDR): only a listener, not a closing connection, counts."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            return exc.errno == errno.EADDRINUSE
    return False


def _refuse_port(port: int) -> NoReturn:
    """One line and EX_CONFIG, not granian's Rust traceback."""
    print(f"hourglass http: port {port} is taken (ANALYTICS_HTTP_PORT moves it)", file=sys.stderr, flush=True)
    raise SystemExit(EX_CONFIG)


def _serve(settings: Settings) -> None:
    server = Granian(
        "server.__main__:app_from_env",
        factory=True,
        address=settings.http_host,
        port=settings.http_port,
        interface=Interfaces.ASGI,
        # HTTP/1 only: with `auto`, granian waits for a protocol preface with no timeout, so a connection
        # that never sends a byte would be held forever; hyper's header-read timeout covers it here.
        http=HTTPModes.http1,
        workers=settings.http_workers,
        backlog=2048,
        respawn_failed_workers=True,
        log_access=False,
        http1_settings=HTTP1Settings(header_read_timeout=max(1, int(settings.http_idle_timeout_s * 1000))),
    )
    try:
        server.serve()
    except RuntimeError as exc:
        # Taken between the check and granian's bind: granian raises from Rust with the OS error.
        if f"os error {errno.EADDRINUSE}" in str(exc):
            _refuse_port(settings.http_port)
        raise


async def _partition_problem(settings: Settings) -> str | None:
    """Refuse to start against a stream made for another partition count. When NATS or the stream is
    not there yet the workers start anyway; they check again and refuse to publish on a mismatch."""
    # Quiet: the workers say each failed try; this check says only that it could not be made.
    said = NatsLog("hourglass-http-check", redacted(settings.nats_url), quiet=True)
    try:
        # One try, bounded: an unresolvable host made nats-py retry forever, and nothing listened.
        once = {"allow_reconnect": False, "max_reconnect_attempts": 0}
        options = {**settings.nats_options("hourglass-http-check"), **said.options(), **once}
        nc = await asyncio.wait_for(nats.connect(**options), 5)
    except Exception as exc:
        why = reason(said.last or exc)
        where = redacted(settings.nats_url)
        print(f"hourglass http: NATS at {where} not reachable yet ({why}); starting anyway", file=sys.stderr)
        return None
    try:
        info = await nc.jetstream(timeout=2).stream_info(settings.stream_name)
        return partition_mismatch(settings.stream_name, info.config.metadata, settings.partitions)
    except Exception:
        return None
    finally:
        await nc.close()


METRICS_DIR_PREFIX = "hourglass-metrics-"


def _prepare_multiprocess_metrics() -> Path | None:
    """Workers share counters through files in one directory; set it before any worker imports
    prometheus_client. Returns the directory when this process made it (and must remove it)."""
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if directory:
        path = Path(directory)
        path.mkdir(parents=True, exist_ok=True)
        for stale in path.glob("*.db"):
            stale.unlink()
        return None
    # Directories of servers that died without cleaning up (SIGKILL) carry their pid: remove them.
    for stale in Path(tempfile.gettempdir()).glob(f"{METRICS_DIR_PREFIX}*"):
        pid = stale.name.removeprefix(METRICS_DIR_PREFIX).partition("-")[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(stale, ignore_errors=True)
    path = Path(tempfile.mkdtemp(prefix=f"{METRICS_DIR_PREFIX}{os.getpid()}-"))
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(path)
    return path


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


if __name__ == "__main__":
    main()
