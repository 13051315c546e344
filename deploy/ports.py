"""Every port `./just up` will bind, each with the variable that moves it, checked before anything starts;
then its data directory, locked for the supervisor's life so a second stack on it is refused."""

from __future__ import annotations

import errno
import fcntl
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from deploy.servers import loopback_port
from deploy.settings import Settings

CLUSTER_PORT_OFFSET = 2000
"""A loopback cluster node listens for routes on its client port plus this."""

EX_CONFIG = 78
"""Exit code (sysexits' EX_CONFIG) of a child that cannot run as configured, e.g. its port is taken:
the supervisor stops everything instead of restarting it."""

MAX_PORT = 65535
"""The highest TCP port; a derived port (a Valkey node's cluster bus, its port + 10000) can pass it."""

IN_USE = "address already in use"
"""How nats-server, valkey-server and granian say a port is taken (compared in lower case)."""


@dataclass(frozen=True, slots=True)
class Port:
    host: str
    port: int
    variable: str
    """The ANALYTICS_* variable that moves this port."""
    what: str = ""
    """Said after the port when the variable alone does not tell which port it is."""

    def taken(self) -> str:
        return f"{self.named()} is taken ({self.variable} moves it)"

    def named(self) -> str:
        return f"port {self.port} ({self.what})" if self.what else f"port {self.port}"


def planned(settings: Settings, projectors: int) -> list[Port]:
    """The ports the stack will listen on, in the order it starts its processes."""
    out: list[Port] = []
    nats_ports = [loopback_port(url, 4222) for url in settings.nats_url.split(",")]
    cluster = len(nats_ports) > 1 and all(nats_ports)
    for port in nats_ports:
        if port is not None:
            out.append(Port("127.0.0.1", port, "ANALYTICS_NATS_URL"))
        if port is not None and cluster:
            route = port + CLUSTER_PORT_OFFSET
            out.append(Port("127.0.0.1", route, "ANALYTICS_NATS_URL", f"cluster routes of {port}"))
    redis_ports = [loopback_port(url, 6379) for url in settings.redis_url.split(",")]
    for port in redis_ports if all(redis_ports) else []:
        assert port is not None
        out.append(Port("127.0.0.1", port, "ANALYTICS_REDIS_URL"))
        if len(redis_ports) > 1:  # a Valkey cluster's node: its cluster bus too
            out.append(Port("127.0.0.1", port + 10000, "ANALYTICS_REDIS_URL", f"cluster bus of {port}"))
    out.append(Port(settings.http_host, settings.http_port, "ANALYTICS_HTTP_PORT"))
    if settings.admin_port:
        out.append(Port(settings.admin_host, settings.admin_port, "ANALYTICS_ADMIN_PORT"))
    if settings.projector_metrics_port:
        for i in range(projectors):
            what = f"projector {i + 1}" if projectors > 1 else ""
            port = settings.projector_metrics_port + i
            out.append(Port("127.0.0.1", port, "ANALYTICS_PROJECTOR_METRICS_PORT", what))
    if settings.audit_enabled and settings.audit_metrics_port:
        out.append(Port("127.0.0.1", settings.audit_metrics_port, "ANALYTICS_AUDIT_METRICS_PORT", "audit"))
    return out


def problems(ports: list[Port]) -> list[str]:
    """What stops these ports from being bound: past 65535, set twice, taken, or privileged (empty:
    all free)."""
    found: list[str] = []
    seen: dict[int, Port] = {}
    for port in ports:
        if port.port > MAX_PORT:
            found.append(f"{port.named()} is above {MAX_PORT} ({port.variable} moves it)")
            continue
        first = seen.setdefault(port.port, port)
        if first is not port:
            found.append(f"port {port.port} is set twice ({first.variable} and {port.variable})")
            continue
        problem = bind_problem(port.host, port.port)
        if problem == errno.EADDRINUSE:
            found.append(port.taken())
        elif problem == errno.EACCES:
            found.append(f"port {port.port} needs privileges ({port.variable} moves it)")
    return found


def bind_problem(host: str, port: int) -> int | None:
    """The errno binding host:port fails with, as the servers bind (SO_REUSEADDR, so a connection of
    a stopped server still in TIME_WAIT does not count), or None when it binds."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            return exc.errno
    return None


LOCK_NAME = "up.lock"


def claim(data_dir: Path) -> IO[str]:
    """Lock `data_dir` (made if missing) until the returned file is closed or this process ends, or
    raise SystemExit with one line when another stack holds it: two stacks writing one JetStream store
    or one Valkey directory would corrupt both. The lock is the kernel's (flock), so a stack killed
    with SIGKILL leaves none behind; the file itself stays, with the last holder's pid."""
    data_dir.mkdir(parents=True, exist_ok=True)
    lock = (data_dir / LOCK_NAME).open("a+")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.seek(0)
        holder = lock.read().strip() or "?"
        lock.close()
        raise SystemExit(
            f"{data_dir} is in use by another stack (pid {holder}); ANALYTICS_DATA_DIR moves it"
        ) from None
    lock.seek(0)
    lock.truncate()
    lock.write(f"{os.getpid()}\n")
    lock.flush()
    return lock
