"""`./just up`: runs nats-server, valkey-server, the projector and the HTTP server, restarting what dies."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import functools
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from contract.settings import Settings
from deploy.secrets import prepare
from deploy.servers import (
    loopback_port,
    nats_cluster_command,
    nats_command,
    port_open,
    valkey_command,
)

COLORS = ["\033[36m", "\033[33m", "\033[35m", "\033[32m", "\033[34m", "\033[31m"]
RESET = "\033[0m"
STOP_GRACE_S = 10.0
READY_TIMEOUT_S = 20.0
CLUSTER_URL = "nats://127.0.0.1:4222,nats://127.0.0.1:4223,nats://127.0.0.1:4224"


def _die_with_parent() -> None:
    """Children get SIGTERM if the supervisor itself is killed, so nothing is left behind."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@dataclass
class Child:
    name: str
    argv: list[str]
    env: dict[str, str]
    ready: Callable[[], bool] | None = None
    proc: asyncio.subprocess.Process | None = None
    restarts: int = 0
    color: str = ""
    started: float = field(default=0.0)
    pump: asyncio.Task[None] | None = None
    oneshot: bool = False
    """A setup step: it runs to completion before the children after it start, and must succeed."""


class Supervisor:
    def __init__(self, children: list[Child], log_file: Path | None) -> None:
        self.children = children
        self.stopping = asyncio.Event()
        self.tty = sys.stdout.isatty()
        self.log_file = log_file.open("a") if log_file else None
        for i, child in enumerate(children):
            child.color = COLORS[i % len(COLORS)]

    def say(self, name: str, line: str, color: str = "") -> None:
        width = max(len(c.name) for c in self.children)
        prefix = f"{name:>{width}} |"
        if self.tty and color:
            sys.stdout.write(f"{color}{prefix}{RESET} {line}\n")
        else:
            sys.stdout.write(f"{prefix} {line}\n")
        sys.stdout.flush()
        if self.log_file:
            self.log_file.write(f"{time.strftime('%H:%M:%S')} {prefix} {line}\n")
            self.log_file.flush()

    async def run(self) -> None:
        tasks = []
        for child in self.children:
            await self._spawn(child)
            if child.oneshot:
                assert child.proc is not None
                code = await child.proc.wait()
                if child.pump is not None:
                    await child.pump
                if code != 0:
                    await self._stop_all()
                    raise SystemExit(f"{child.name} failed ({code}); see its log lines above")
                continue
            if child.ready is not None:
                await self._wait_ready(child)
            tasks.append(asyncio.create_task(self._watch(child)))
        self.say("up", "all processes started; Ctrl-C stops them all")
        await self.stopping.wait()
        await self._stop_all()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _spawn(self, child: Child) -> None:
        child.proc = await asyncio.create_subprocess_exec(
            *child.argv,
            env=child.env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            stdin=asyncio.subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        child.started = time.monotonic()
        self.say(child.name, f"started (pid {child.proc.pid})", child.color)
        child.pump = asyncio.create_task(self._pump(child, child.proc))

    async def _pump(self, child: Child, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        async for raw in proc.stdout:
            self.say(child.name, raw.decode(errors="replace").rstrip(), child.color)

    async def _wait_ready(self, child: Child) -> None:
        assert child.ready is not None
        assert child.proc is not None
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not child.ready():
            if child.proc.returncode is not None or time.monotonic() > deadline:
                raise SystemExit(f"{child.name} did not become ready; see its log lines above")
            await asyncio.sleep(0.05)

    async def _watch(self, child: Child) -> None:
        backoff = 0.5
        while not self.stopping.is_set():
            assert child.proc is not None
            code = await child.proc.wait()
            if self.stopping.is_set():
                return
            if time.monotonic() - child.started > 30:
                backoff = 0.5
            child.restarts += 1
            self.say(
                child.name,
                f"exited with {code}; restarting in {backoff:.1f}s (restart #{child.restarts})",
                child.color,
            )
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), backoff)
            if self.stopping.is_set():
                return
            backoff = min(backoff * 2, 10.0)
            await self._spawn(child)

    async def _stop_all(self) -> None:
        # Stop in reverse: HTTP and projector first, so they finish against live servers.
        for child in reversed(self.children):
            proc = child.proc
            if proc is None or proc.returncode is not None:
                continue
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), STOP_GRACE_S)
            except TimeoutError:
                self.say(child.name, "did not stop in time; killing", child.color)
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                await proc.wait()
            self.say(child.name, f"stopped ({proc.returncode})", child.color)


def build_children(settings: Settings, projectors: int) -> list[Child]:
    env = dict(os.environ)
    env.setdefault("ANALYTICS_HTTP_WORKERS", str(os.cpu_count() or 1))
    env["PYTHONUNBUFFERED"] = "1"
    data = settings.data_dir.resolve()
    children: list[Child] = []
    nats_ports = [loopback_port(url, 4222) for url in settings.nats_url.split(",")]
    redis_port = loopback_port(settings.redis_url, 6379)
    # Servers this stack runs get users per role; the credentials are made once and kept.
    prepared = prepare(data, settings, nats_ports[0] or 4222, redis_port or 6379)
    found, nats_config, acl = prepared.secrets, prepared.nats_config, prepared.redis_acl
    if len(nats_ports) > 1 and all(nats_ports):
        # A loopback cluster: node i takes client port p_i and cluster port p_i + 2000.
        ports = [p for p in nats_ports if p is not None]
        for i, port in enumerate(ports, start=1):
            store = data / f"nats-{i}"
            store.mkdir(parents=True, exist_ok=True)
            peers = [p + 2000 for p in ports if p != port]
            routes = f"route:{found.nats['admin']}"
            argv = nats_cluster_command(
                f"hourglass-{i}", port, port + 2000, peers, store, nats_config, routes
            )
            children.append(Child(f"nats{i}", argv, env, functools.partial(port_open, "127.0.0.1", port)))
    elif nats_ports[0] is not None:
        store = data / "nats"
        store.mkdir(parents=True, exist_ok=True)
        port = nats_ports[0]
        children.append(
            Child(
                "nats",
                nats_command(port, store, nats_config),
                env,
                functools.partial(port_open, "127.0.0.1", port),
            )
        )
    if redis_port is not None:
        vdir = data / "valkey"
        vdir.mkdir(parents=True, exist_ok=True)
        children.append(
            Child(
                "valkey",
                valkey_command(redis_port, vdir, acl),
                env,
                functools.partial(port_open, "127.0.0.1", redis_port),
            )
        )
    py = sys.executable
    # The one place the stream is created or reconfigured; HTTP workers and projectors only check it.
    children.append(Child("stream", [py, "-m", "projector", "stream"], env, oneshot=True))
    children.append(
        Child(
            "http",
            [py, "-m", "server"],
            env,
            lambda: port_open(
                settings.http_host if settings.http_host != "0.0.0.0" else "127.0.0.1",
                settings.http_port,
            ),
        )
    )
    # Off unless asked for: a fixed default port would collide when two stacks share a host.
    metrics_base = settings.projector_metrics_port
    for i in range(projectors):
        penv = {**env, "ANALYTICS_PROJECTOR_METRICS_PORT": str(metrics_base + i if metrics_base else 0)}
        name = f"projector{i + 1}" if projectors > 1 else "projector"
        children.append(Child(name, [py, "-m", "projector", "run"], penv))
    return children


def main() -> None:
    parser = argparse.ArgumentParser(prog="./just up", description=__doc__)
    parser.add_argument("--projectors", type=int, default=1, help="projector processes to run")
    parser.add_argument(
        "--cluster",
        action="store_true",
        help="run a 3-node JetStream cluster on loopback (4222-4224) with the stream at R3",
    )
    args = parser.parse_args()
    if args.cluster:
        # Its own data dir: a cluster's event log is a different log from the single node's.
        os.environ.setdefault("ANALYTICS_DATA_DIR", ".data/cluster")
        os.environ.setdefault("ANALYTICS_NATS_URL", CLUSTER_URL)
        os.environ.setdefault("ANALYTICS_STREAM_REPLICAS", "3")
    _die_with_parent()  # if `just` (our parent) is killed, stop everything rather than linger
    settings = Settings.from_env()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    sup = Supervisor(build_children(settings, args.projectors), settings.data_dir / "up.log")

    async def _run() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, sup.stopping.set)
        await sup.run()

    asyncio.run(_run())


if __name__ == "__main__":
    main()
