"""`./just up`: runs nats-server, valkey-server, the projector and the HTTP server, restarting what dies
and refusing, in one line, what cannot work (a port taken, a server on it that is not ours)."""

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
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from deploy import ports
from deploy.credentials import prepare
from deploy.ports import CLUSTER_PORT_OFFSET, EX_CONFIG, IN_USE, Port, claim
from deploy.servers import (
    jetstream_answers,
    loopback_port,
    nats_cluster_command,
    nats_command,
    nats_identity,
    nats_server_name,
    port_open,
    redis_identity,
)
from deploy.settings import Settings, SettingsError
from deploy.valkey_cluster import form_command, valkey_nodes

COLORS = ["\033[36m", "\033[33m", "\033[35m", "\033[32m", "\033[34m", "\033[31m"]
RESET = "\033[0m"
STOP_GRACE_S = 10.0
START_GRACE_S = 3.0
"""A child stopped during start-up has nothing to finish: killed after this."""
TAIL_LINES = 5
READY_TIMEOUT_S = 20.0
RESTART_BACKOFF_S = (0.5, 10.0)
"""A child that dies waits the first, then twice as long each time up to the second, before its restart..."""
STEADY_S = 30.0
"""...until it stayed up this long: then its next restart waits the first again."""
CLUSTER_URL = "nats://127.0.0.1:4222,nats://127.0.0.1:4223,nats://127.0.0.1:4224"
VALKEY_CLUSTER_URL = ",".join(f"redis://127.0.0.1:{port}/0" for port in range(7001, 7007))
"""`cluster-up`'s Valkey cluster: 3 primaries and 3 replicas (cluster bus on 17001-17006)."""


def _die_with_parent() -> None:
    """Children get SIGTERM if the supervisor itself is killed, so nothing is left behind."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@dataclass
class Child:
    name: str
    argv: list[str]
    env: dict[str, str]
    ready: Callable[[int], bool | str] | None = None
    """Given the child's pid: True once it serves, False while not yet, or why what answers is not it."""
    proc: asyncio.subprocess.Process | None = None
    restarts: int = 0
    color: str = ""
    started: float = field(default=0.0)
    pump: asyncio.Task[None] | None = None
    oneshot: bool = False
    """A setup step: it runs to completion before the children after it start, and must succeed."""
    port: Port | None = None
    """The port it listens on, named in the one line that says it is taken."""
    tail: deque[str] = field(default_factory=lambda: deque(maxlen=TAIL_LINES))


class Refused(Exception):
    """Start-up cannot go on; the message is the one line to print."""


class Supervisor:
    def __init__(self, children: list[Child], log_file: Path | None) -> None:
        self.children = children
        self.stopping = asyncio.Event()
        self.hurry = asyncio.Event()
        """Set by a second Ctrl-C: kill what is still running rather than wait out its grace."""
        self.failure: str | None = None
        self.watchers: list[asyncio.Task[None]] = []
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

    def stop(self) -> None:
        """Ctrl-C or SIGTERM, at any moment: start-up included."""
        if self.stopping.is_set():
            self.hurry.set()
        self.stopping.set()

    def fail(self, line: str) -> None:
        if self.failure is None:
            self.failure = line
        self.stopping.set()

    async def run(self) -> None:
        """Start every child, then keep them running until a signal or a fatal exit. Raises
        SystemExit with the one line that says why when start-up was refused or a child cannot run."""
        startup = asyncio.create_task(self._start())
        stop = asyncio.create_task(self.stopping.wait())
        await asyncio.wait({startup, stop}, return_when=asyncio.FIRST_COMPLETED)
        startup.cancel()
        grace = START_GRACE_S
        try:
            await startup
        except asyncio.CancelledError:
            pass
        except Refused as exc:
            self.fail(str(exc))
        else:
            self.say("up", "all processes started; Ctrl-C stops them all")
            await self.stopping.wait()
            grace = STOP_GRACE_S
        stop.cancel()
        await self._stop_all(grace)
        for task in self.watchers:
            task.cancel()
        await asyncio.gather(*self.watchers, return_exceptions=True)
        if self.failure is not None:
            raise SystemExit(self.failure)

    async def _start(self) -> None:
        for child in self.children:
            await self._spawn(child)
            assert child.proc is not None
            if child.oneshot:
                code = await child.proc.wait()
                if code != 0:
                    raise Refused(await self._exit_line(child, code))
                continue
            if child.ready is not None:
                await self._wait_ready(child, child.proc)
            self.watchers.append(asyncio.create_task(self._watch(child)))

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
        child.tail.clear()
        self.say(child.name, f"started (pid {child.proc.pid})", child.color)
        child.pump = asyncio.create_task(self._pump(child, child.proc))

    async def _pump(self, child: Child, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        async for raw in proc.stdout:
            line = raw.decode(errors="replace").rstrip()
            if line.strip():
                child.tail.append(line)
            self.say(child.name, line, child.color)

    async def _wait_ready(self, child: Child, proc: asyncio.subprocess.Process) -> None:
        assert child.ready is not None
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            # In a thread: a check may wait a second or two for an answer, and a signal must not.
            verdict = await asyncio.to_thread(child.ready, proc.pid)
            if verdict is True:
                return
            if isinstance(verdict, str):
                port = child.port
                raise Refused(
                    f"port {port.port} is taken by another server: {verdict} ({port.variable} moves it)"
                    if port is not None
                    else f"{child.name}: {verdict}"
                )
            if proc.returncode is not None:
                raise Refused(await self._exit_line(child, proc.returncode))
            if time.monotonic() > deadline:
                raise Refused(f"{child.name} was not ready in {READY_TIMEOUT_S:.0f} s; see its log above")
            await asyncio.sleep(0.05)

    async def _drained(self, child: Child) -> list[str]:
        """The last lines of a child that exited, once its output is read to the end."""
        if child.pump is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(child.pump), 2.0)
        return list(child.tail)

    async def _exit_line(self, child: Child, code: int) -> str:
        """Why a child exited, in one line: its own when it said its configuration is wrong, the port
        when it could not bind it, else its code and last line."""
        lines = await self._drained(child)
        if code == EX_CONFIG and lines:
            return lines[-1]
        if _says_taken(child, lines):
            assert child.port is not None
            return child.port.taken()
        return f"{child.name} failed ({code}): {lines[-1] if lines else 'no output'}"

    async def _watch(self, child: Child) -> None:
        first, most = RESTART_BACKOFF_S
        backoff = first
        while not self.stopping.is_set():
            assert child.proc is not None
            code = await child.proc.wait()
            if self.stopping.is_set():
                return
            if code == EX_CONFIG or (code != 0 and await self._in_use(child)):
                # Restarting would fail the same way, every time: stop, and say why.
                self.fail(await self._exit_line(child, code))
                return
            if time.monotonic() - child.started > STEADY_S:
                backoff = first
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
            backoff = min(backoff * 2, most)
            await self._spawn(child)

    async def _in_use(self, child: Child) -> bool:
        return _says_taken(child, await self._drained(child))

    async def _stop_all(self, grace: float) -> None:
        # Stop in reverse: HTTP and projector first, so they finish against live servers.
        for child in reversed(self.children):
            proc = child.proc
            if proc is None or proc.returncode is not None:
                continue
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            exited = asyncio.create_task(proc.wait())
            hurry = asyncio.create_task(self.hurry.wait())
            await asyncio.wait({exited, hurry}, timeout=grace, return_when=asyncio.FIRST_COMPLETED)
            hurry.cancel()
            if not exited.done():
                self.say(child.name, "did not stop in time; killing", child.color)
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                await exited
            self.say(child.name, f"stopped ({proc.returncode})", child.color)


def _says_taken(child: Child, lines: list[str]) -> bool:
    """Whether a server said it could not bind its own port (nats-server and valkey-server both put
    `host:port` and "address already in use" in one line); another port it could not bind is not it."""
    port = child.port
    return port is not None and any(IN_USE in line.lower() and f":{port.port}" in line for line in lines)


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
    admin = found.nats["admin"]
    if len(nats_ports) > 1 and all(nats_ports):
        # A loopback cluster: node i takes client port p_i and cluster port p_i + 2000. Its name stays
        # `hourglass-i`: a clustered JetStream server is known to its peers by name.
        all_ports = [p for p in nats_ports if p is not None]
        for i, port in enumerate(all_ports, start=1):
            store = data / f"nats-{i}"
            store.mkdir(parents=True, exist_ok=True)
            peers = [p + CLUSTER_PORT_OFFSET for p in all_ports if p != port]
            name = f"hourglass-{i}"
            argv = nats_cluster_command(
                name, port, port + CLUSTER_PORT_OFFSET, peers, store, nats_config, f"route:{admin}"
            )
            ready = functools.partial(_nats_ready, port, name, admin)
            if i == len(all_ports):  # the stream step after it needs JetStream, not only the nodes
                ready = functools.partial(_cluster_ready, port, name, admin, settings.stream_name)
            children.append(Child(f"nats{i}", argv, env, ready, port=_nats_port(port)))
    elif nats_ports[0] is not None:
        store = data / "nats"
        store.mkdir(parents=True, exist_ok=True)
        port, name = nats_ports[0], nats_server_name(data)
        argv = nats_command(port, store, nats_config, name)
        ready = functools.partial(_nats_ready, port, name, admin)
        children.append(Child("nats", argv, env, ready, port=_nats_port(port)))
    for name, argv, port in valkey_nodes(settings, data, acl, found.redis["admin"]):
        ready = functools.partial(redis_identity, port, found.redis["admin"])
        children.append(Child(name, argv, env, ready, port=Port("127.0.0.1", port, "ANALYTICS_REDIS_URL")))
    forming = form_command(settings)
    if forming is not None:  # a loopback Valkey cluster: formed (or found formed) before anything uses it
        children.append(Child("valkey-form", forming, env, oneshot=True))
    py = sys.executable
    # The one place the stream is created or reconfigured; HTTP workers and projectors only check it.
    children.append(Child("stream", [py, "-m", "projector", "stream"], env, oneshot=True))
    host = settings.http_host if settings.http_host != "0.0.0.0" else "127.0.0.1"
    http = Port(settings.http_host, settings.http_port, "ANALYTICS_HTTP_PORT")
    listening = functools.partial(_listening, host, settings.http_port)
    children.append(Child("http", [py, "-m", "server"], env, listening, port=http))
    # Off unless asked for: a fixed default port would collide when two stacks share a host.
    metrics_base = settings.projector_metrics_port
    for i in range(projectors):
        penv = {**env, "ANALYTICS_PROJECTOR_METRICS_PORT": str(metrics_base + i if metrics_base else 0)}
        name = f"projector{i + 1}" if projectors > 1 else "projector"
        children.append(Child(name, [py, "-m", "projector", "run"], penv))
    if settings.audit_enabled:
        # One continuous audit (more may run anywhere: each hour is claimed by the one auditing it).
        children.append(Child("audit", [py, "-m", "projector", "audit", "--follow"], env))
    return children


def _nats_port(port: int) -> Port:
    return Port("127.0.0.1", port, "ANALYTICS_NATS_URL")


def _nats_ready(port: int, name: str, admin_password: str, pid: int) -> bool | str:
    return nats_identity(port, name, "admin", admin_password)


def _cluster_ready(port: int, name: str, admin_password: str, stream: str, pid: int) -> bool | str:
    ours = nats_identity(port, name, "admin", admin_password)
    return jetstream_answers(port, "admin", admin_password, stream) if ours is True else ours


def _listening(host: str, port: int, pid: int) -> bool | str:
    return port_open(host, port)


def main() -> None:
    """Exit codes: 0 after a stop by Ctrl-C or SIGTERM; 1 with one line when it cannot start (a port
    taken, a server on it that is not ours, a setup step failed) or a child cannot run as configured."""
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # until the loop takes over: as Ctrl-C
    try:
        _main()
    except KeyboardInterrupt:  # before the loop took the signals over: nothing was started yet
        raise SystemExit(0) from None


def _main() -> None:
    parser = argparse.ArgumentParser(prog="./just up", description=__doc__)
    parser.add_argument("--projectors", type=int, default=1, help="projector processes to run")
    parser.add_argument(
        "--cluster",
        action="store_true",
        help="run a 3-node JetStream cluster on loopback (4222-4224) with the stream at R3, and a Valkey "
        "cluster of 3 primaries and 3 replicas (7001-7006)",
    )
    args = parser.parse_args()
    if args.cluster:
        # Its own data dir: a cluster's event log is a different log from the single node's.
        os.environ.setdefault("ANALYTICS_DATA_DIR", ".data/cluster")
        os.environ.setdefault("ANALYTICS_NATS_URL", CLUSTER_URL)
        os.environ.setdefault("ANALYTICS_STREAM_REPLICAS", "3")
        os.environ.setdefault("ANALYTICS_REDIS_URL", VALKEY_CLUSTER_URL)
    _die_with_parent()  # if `just` (our parent) is killed, stop everything rather than linger
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        raise SystemExit(str(exc)) from None
    # Before anything starts: a port someone else holds is one line, not a server failing to bind.
    taken = ports.problems(ports.planned(settings, args.projectors))
    if taken:
        raise SystemExit("; ".join(taken))
    _held = claim(settings.data_dir)  # kept open: the lock lasts as long as the supervisor
    sup = Supervisor(build_children(settings, args.projectors), settings.data_dir / "up.log")

    async def _run() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, sup.stop)
        await sup.run()

    asyncio.run(_run())


if __name__ == "__main__":
    main()
