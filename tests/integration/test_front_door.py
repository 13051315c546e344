"""`./just up` never traps anyone: a taken port is one line, a foreign server is refused, a signal stops
it at any moment, start-up included, and nothing it started outlives it."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from deploy.credentials import prepare
from deploy.ports import EX_CONFIG, Port
from deploy.servers import (
    NATS_CONF,
    ROOT,
    nats_command,
    nats_identity,
    nats_server_name,
    redis_identity,
    valkey_command,
    wait_for_port,
)
from deploy.settings import Settings
from deploy.supervisor import Child, Supervisor
from tests.helpers import eventually, settings_env
from tests.integration.conftest import spawn
from tests.ports import free_port

pytestmark = pytest.mark.slow

QUICK_S = 10.0
"""What "within a few seconds" means here, with room for a busy machine."""


def stack_settings(data_dir: Path, **overrides: object) -> Settings:
    return Settings(
        http_port=free_port(),
        admin_port=free_port(),
        http_workers=1,
        nats_url=f"nats://127.0.0.1:{free_port()}",
        redis_url=f"redis://127.0.0.1:{free_port()}/0",
        data_dir=data_dir,
    ).replace(**overrides)


def nats_port(settings: Settings) -> int:
    return int(settings.nats_url.split(",")[0].rsplit(":", 1)[1])


def stack_processes(data_dir: Path) -> list[int]:
    """Live processes started with this stack's environment: the supervisor and all it started. A
    valkey-server writes its title over its environment, so it is known by its working directory
    (its `--dir`, under the data dir)."""
    mark = f"ANALYTICS_DATA_DIR={data_dir}".encode()
    inside = data_dir.resolve()
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if mark in (proc / "environ").read_bytes().split(b"\0") or (
                inside in (cwd := (proc / "cwd").readlink()).parents or cwd == inside
            ):
                found.append(int(proc.name))
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
    return found


@pytest.fixture
def listener() -> Iterator[list[socket.socket]]:
    """Plain listening sockets standing in for someone else's server."""
    held: list[socket.socket] = []
    yield held
    for sock in held:
        sock.close()


def hold(held: list[socket.socket], port: int) -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", port))
    sock.listen()
    held.append(sock)


def up(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return run_module(settings_env(settings), "deploy.supervisor", *args)


def run_module(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """`python -m <args>` run to its end with `env`, its output captured."""
    return subprocess.run(
        [sys.executable, "-m", *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60
    )


def assert_one_line(done: subprocess.CompletedProcess[str], *expected: str) -> None:
    output = (done.stdout + done.stderr).strip()
    assert done.returncode != 0, output
    assert "Traceback" not in output
    assert len(output.splitlines()) == 1, output
    for text in expected:
        assert text in output, output


@pytest.mark.parametrize("which", ["http", "nats", "admin", "redis"])
def test_a_taken_port_is_one_line_naming_it_and_its_variable(
    tmp_path: Path, listener: list[socket.socket], which: str
) -> None:
    settings = stack_settings(tmp_path / "data")
    port, variable = {
        "http": (settings.http_port, "ANALYTICS_HTTP_PORT"),
        "nats": (nats_port(settings), "ANALYTICS_NATS_URL"),
        "admin": (settings.admin_port, "ANALYTICS_ADMIN_PORT"),
        "redis": (int(settings.redis_url.rsplit(":", 1)[1].split("/")[0]), "ANALYTICS_REDIS_URL"),
    }[which]
    hold(listener, port)
    began = time.monotonic()
    done = up(settings)
    assert time.monotonic() - began < QUICK_S
    assert_one_line(done, f"port {port} is taken ({variable} moves it)")
    assert done.returncode == 1
    assert stack_processes(settings.data_dir) == []


def test_just_up_on_a_taken_port_is_that_one_line_too(tmp_path: Path, listener: list[socket.socket]) -> None:
    just = Path(sys.executable).parent / "just"
    if not just.exists():
        pytest.skip("no `just` beside this Python")
    settings = stack_settings(tmp_path / "data")
    hold(listener, settings.http_port)
    done = subprocess.run(
        [str(just), "--justfile", str(ROOT / "justfile"), "--working-directory", str(ROOT), "up"],
        env=settings_env(settings),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert_one_line(done, f"port {settings.http_port} is taken (ANALYTICS_HTTP_PORT moves it)")


def test_a_cluster_with_a_taken_node_or_route_port_is_one_line(
    tmp_path: Path, listener: list[socket.socket]
) -> None:
    ports = [free_port() for _ in range(3)]
    url = ",".join(f"nats://127.0.0.1:{p}" for p in ports)
    settings = stack_settings(tmp_path / "data", nats_url=url, stream_replicas=3)
    hold(listener, ports[1])
    assert_one_line(up(settings, "--cluster"), f"port {ports[1]} is taken (ANALYTICS_NATS_URL moves it)")
    listener.pop().close()
    hold(listener, ports[2] + 2000)
    assert_one_line(up(settings, "--cluster"), f"port {ports[2] + 2000} (cluster routes of {ports[2]})")
    assert stack_processes(settings.data_dir) == []


def test_a_valkey_node_whose_cluster_bus_would_pass_65535_is_one_line(tmp_path: Path) -> None:
    url = f"redis://127.0.0.1:{free_port()},redis://127.0.0.1:65000"
    settings = stack_settings(tmp_path / "data", redis_url=url)
    assert_one_line(
        up(settings), "port 75000 (cluster bus of 65000) is above 65535 (ANALYTICS_REDIS_URL moves it)"
    )
    assert stack_processes(settings.data_dir) == []


def someone_elses_nats(port: int, store: Path) -> subprocess.Popen[bytes]:
    """A nats-server that is not ours: the project's plain config, no users, its own name."""
    theirs = subprocess.Popen(nats_command(port, store), stderr=subprocess.DEVNULL)
    wait_for_port("127.0.0.1", port, 20, theirs)
    return theirs


def test_a_nats_server_already_on_the_port_is_refused_in_one_line(tmp_path: Path) -> None:
    settings = stack_settings(tmp_path / "data")
    port = nats_port(settings)
    theirs = someone_elses_nats(port, tmp_path / "theirs")
    try:
        assert_one_line(up(settings), f"port {port} is taken (ANALYTICS_NATS_URL moves it)")
    finally:
        theirs.terminate()
        theirs.wait(10)
    assert stack_processes(settings.data_dir) == []


def test_the_http_process_on_a_taken_port_says_so_in_one_line(
    tmp_path: Path, listener: list[socket.socket]
) -> None:
    settings = stack_settings(tmp_path / "data", admin_port=0)
    hold(listener, settings.http_port)
    done = run_module(settings_env(settings), "server")
    assert_one_line(done, f"port {settings.http_port} is taken (ANALYTICS_HTTP_PORT moves it)")
    assert done.returncode == EX_CONFIG


class _Silent:
    """A stand-in for `Supervisor.say` that keeps what was said."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def __call__(self, name: str, line: str, color: str = "") -> None:
        self.lines.append(f"{name} | {line}")


def supervised(children: list[Child]) -> tuple[Supervisor, _Silent]:
    sup = Supervisor(children, None)
    said = _Silent()
    sup.say = said  # type: ignore[method-assign]
    return sup, said


async def test_a_child_that_exits_because_its_port_is_taken_is_not_restarted(
    tmp_path: Path, listener: list[socket.socket]
) -> None:
    settings = stack_settings(tmp_path / "data", admin_port=0)
    hold(listener, settings.http_port)
    port = Port("127.0.0.1", settings.http_port, "ANALYTICS_HTTP_PORT")
    # No readiness check: it is watched from the start, as a child that dies after start-up is.
    child = Child("http", [sys.executable, "-m", "server"], settings_env(settings), port=port)
    sup, said = supervised([child])
    began = time.monotonic()
    with pytest.raises(SystemExit) as refused:
        await sup.run()
    assert time.monotonic() - began < QUICK_S
    assert (
        str(refused.value.code)
        == f"hourglass http: port {settings.http_port} is taken (ANALYTICS_HTTP_PORT moves it)"
    )
    assert not any("restarting" in line for line in said.lines), said.lines


@pytest.mark.parametrize("theirs", ["silent", "nats-server"])
async def test_our_nats_server_failing_to_bind_is_one_line_even_past_the_port_check(
    tmp_path: Path, listener: list[socket.socket], theirs: str
) -> None:
    """Someone takes the port between the check and our server's bind: readiness notices, whether
    what holds it says nothing or answers as a NATS server."""
    data = tmp_path / "data"
    settings = stack_settings(data)
    port = nats_port(settings)
    foreign: subprocess.Popen[bytes] | None = None
    if theirs == "silent":
        hold(listener, port)
    else:
        foreign = someone_elses_nats(port, tmp_path / "theirs")
    prepared = prepare(data, settings, port, free_port())
    name = nats_server_name(data)
    argv = nats_command(port, data, prepared.nats_config, name)
    password = prepared.secrets.nats["admin"]
    child = Child(
        "nats",
        argv,
        dict(os.environ),
        lambda pid: nats_identity(port, name, "admin", password),
        port=Port("127.0.0.1", port, "ANALYTICS_NATS_URL"),
    )
    sup, _ = supervised([child])
    try:
        with pytest.raises(SystemExit) as refused:
            await sup.run()
    finally:
        if foreign is not None:
            foreign.terminate()
            foreign.wait(10)
    line = str(refused.value.code)
    assert line.startswith(f"port {port} is taken"), line
    assert line.endswith("(ANALYTICS_NATS_URL moves it)"), line
    assert "\n" not in line


async def test_our_valkey_failing_to_bind_is_one_line_even_past_the_port_check(
    tmp_path: Path, listener: list[socket.socket]
) -> None:
    data = tmp_path / "data"
    port = free_port()
    hold(listener, port)
    prepared = prepare(data, stack_settings(data), free_port(), port)
    password = prepared.secrets.redis["admin"]
    child = Child(
        "valkey",
        valkey_command(port, data, prepared.redis_acl),
        dict(os.environ),
        lambda pid: redis_identity(port, password, pid),
        port=Port("127.0.0.1", port, "ANALYTICS_REDIS_URL"),
    )
    sup, _ = supervised([child])
    with pytest.raises(SystemExit) as refused:
        await sup.run()
    assert refused.value.code == f"port {port} is taken (ANALYTICS_REDIS_URL moves it)"


def test_a_bad_setting_is_one_line(tmp_path: Path) -> None:
    env = {**settings_env(stack_settings(tmp_path / "data")), "ANALYTICS_HTTP_PORT": "eighty"}
    assert_one_line(run_module(env, "deploy.supervisor"), "ANALYTICS_HTTP_PORT='eighty'")


@pytest.mark.parametrize(
    ("command", "missing"),
    [
        (["server"], "nats-ingest.url"),
        (["projector", "run"], "nats-projector.url"),
        (["projector", "replay"], "nats-projector.url"),
        (["projector", "audit"], "nats-audit.url"),
        (["projector", "inspect"], "nats-projector.url"),
    ],
)
def test_a_secrets_directory_missing_the_roles_file_is_one_line_naming_it(
    tmp_path: Path, command: list[str], missing: str
) -> None:
    """As a Kubernetes Secret mounted with a key misnamed: the file is named, not a NOAUTH later."""
    settings = stack_settings(tmp_path / "data")
    (settings.data_dir / "secrets").mkdir(parents=True)
    assert_one_line(run_module(settings_env(settings), *command), f"secrets/{missing} is missing")


def test_the_http_process_refuses_a_bad_setting_in_one_line(tmp_path: Path) -> None:
    env = {**settings_env(stack_settings(tmp_path / "data")), "ANALYTICS_PARTITIONS": "0"}
    done = run_module(env, "server")
    assert_one_line(done, "ANALYTICS_PARTITIONS must be at least 1")
    assert done.returncode == EX_CONFIG


def test_readiness_tells_our_servers_from_others_on_their_port(tmp_path: Path) -> None:
    data = tmp_path / "data"
    settings = stack_settings(data)
    ours_nats, ours_redis = free_port(), free_port()
    prepared = prepare(data, settings, ours_nats, ours_redis)
    name, secrets = nats_server_name(data), prepared.secrets
    (data / "n").mkdir()
    (data / "v").mkdir()
    (data / "theirs").mkdir()
    theirs_nats, theirs_redis, fake = free_port(), free_port(), free_port()
    procs = [
        subprocess.Popen(
            nats_command(ours_nats, data / "n", prepared.nats_config, name), stdout=subprocess.DEVNULL
        ),
        subprocess.Popen(
            valkey_command(ours_redis, data / "v", prepared.redis_acl), stdout=subprocess.DEVNULL
        ),
        subprocess.Popen(nats_command(theirs_nats, data / "theirs", NATS_CONF), stderr=subprocess.DEVNULL),
        subprocess.Popen(valkey_command(theirs_redis, data / "theirs"), stdout=subprocess.DEVNULL),
    ]
    speaker = socket.socket()
    try:
        for port, proc in zip((ours_nats, ours_redis, theirs_nats, theirs_redis), procs, strict=True):
            wait_for_port("127.0.0.1", port, 20, proc)
        admin_nats, admin_redis = secrets.nats["admin"], secrets.redis["admin"]
        assert nats_identity(ours_nats, name, "admin", admin_nats) is True
        assert redis_identity(ours_redis, admin_redis, procs[1].pid) is True
        # Someone else's nats-server (the project's own config, so even named like one of ours).
        assert nats_identity(theirs_nats, name, "admin", admin_nats) == (
            f"a NATS server named 'hourglass-local', not {name!r}"
        )
        # Right name, other credentials: a NATS server from another data directory.
        assert "refuses this stack's credentials" in str(nats_identity(ours_nats, name, "admin", "wrong"))
        assert "refuses this stack's credentials" in str(redis_identity(theirs_redis, admin_redis, 1))
        assert redis_identity(ours_redis, admin_redis, procs[1].pid + 1) == (
            f"a Redis server in process {procs[1].pid}, not in {procs[1].pid + 1}"
        )
        # A listener that speaks, but not NATS; and nothing at all yet.
        speaker.bind(("127.0.0.1", fake))
        speaker.listen()
        answer = asyncio.run(_speak_once(speaker, b"HTTP/1.1 400 Bad Request\r\n\r\n", fake, name))
        assert answer == "it does not speak NATS"
        assert nats_identity(free_port(), name, "admin", admin_nats) is False
    finally:
        speaker.close()
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(10)


async def _speak_once(sock: socket.socket, greeting: bytes, port: int, name: str) -> bool | str:
    def serve() -> None:
        conn, _ = sock.accept()
        with conn:
            conn.sendall(greeting)

    server = asyncio.create_task(asyncio.to_thread(serve))
    answer = await asyncio.to_thread(nats_identity, port, name, "admin", "x")
    await server
    return answer


def launch(settings: Settings, log: Path, *args: str) -> subprocess.Popen[bytes]:
    return spawn(["-m", "deploy.supervisor", *args], settings_env(settings), log)


async def stopped_on(
    settings: Settings,
    tmp_path: Path,
    reaper: list[subprocess.Popen[bytes]],
    said: str,
    sig: signal.Signals,
    *args: str,
) -> str:
    """Start the stack, send `sig` as soon as its log shows `said`; it ends quickly, leaving nothing."""
    log = tmp_path / "up.log"
    proc = launch(settings, log, *args)
    reaper.append(proc)
    await eventually(lambda: asyncio.to_thread(log.read_text), lambda text: said in text, timeout=60)
    began = time.monotonic()
    proc.send_signal(sig)
    code = await asyncio.to_thread(proc.wait, QUICK_S)
    assert time.monotonic() - began < QUICK_S
    text = log.read_text()
    assert code == 0, text
    assert "Traceback" not in text
    assert stack_processes(settings.data_dir) == [], text
    return text


@pytest.mark.parametrize("said", ["nats | started", "valkey | started", "stream | started", "http | started"])
async def test_sigterm_during_start_up_stops_everything_within_seconds(
    tmp_path: Path, reaper: list[subprocess.Popen[bytes]], said: str
) -> None:
    settings = stack_settings(tmp_path / "data")
    text = await stopped_on(settings, tmp_path, reaper, said, signal.SIGTERM)
    assert "all processes started" not in text or said == "http | started"


async def test_ctrl_c_after_start_up_is_a_clean_stop(
    tmp_path: Path, reaper: list[subprocess.Popen[bytes]]
) -> None:
    settings = stack_settings(tmp_path / "data")
    text = await stopped_on(settings, tmp_path, reaper, "all processes started", signal.SIGINT)
    assert "projector | stopped" in text
    assert "nats | stopped" in text


async def test_sigterm_during_cluster_start_up_stops_every_node(
    tmp_path: Path, reaper: list[subprocess.Popen[bytes]]
) -> None:
    url = ",".join(f"nats://127.0.0.1:{free_port()}" for _ in range(3))
    settings = stack_settings(tmp_path / "data", nats_url=url, stream_replicas=3)
    await stopped_on(settings, tmp_path, reaper, "nats2 | started", signal.SIGTERM, "--cluster")


async def test_cluster_up_starts_stops_on_ctrl_c_and_starts_again_on_its_data(
    tmp_path: Path, reaper: list[subprocess.Popen[bytes]]
) -> None:
    """A restarted cluster answers JetStream requests only once it has elected its leaders: the
    stream step waits for that rather than timing out."""
    url = ",".join(f"nats://127.0.0.1:{free_port()}" for _ in range(3))
    settings = stack_settings(tmp_path / "data", nats_url=url, stream_replicas=3)
    for _ in range(2):
        text = await stopped_on(
            settings, tmp_path, reaper, "all processes started", signal.SIGINT, "--cluster"
        )
        assert "nats3 | stopped" in text
        (tmp_path / "up.log").unlink()
