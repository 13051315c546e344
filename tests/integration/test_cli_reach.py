"""Commands that need the stack never trap anyone: one line naming what they cannot reach, a non-zero
exit after ANALYTICS_CONNECT_DEADLINE_S, no traceback; they stop on SIGTERM and end with their parent."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from deploy.servers import ROOT
from deploy.settings import Settings, redacted
from projector.reach import reach_nats
from tests.conftest import Server, running
from tests.helpers import eventually, isolated_settings, settings_env
from tests.ports import free_port

DEADLINE_S = 1.5
PASSWORD = "hunter2secret"


def closed_port_env(tmp_path: Path, **overrides: object) -> dict[str, str]:
    """Settings pointing at ports nothing listens on, with passwords in the URLs."""
    settings = isolated_settings(
        f"nats://hg:{PASSWORD}@127.0.0.1:{free_port()}",
        f"redis://hg:{PASSWORD}@127.0.0.1:{free_port()}/0",
        connect_deadline_s=DEADLINE_S,
        data_dir=tmp_path,
    )
    return settings_env(settings.replace(**overrides))


def start(args: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "projector", *args],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def catching_sigterm(pid: int, within_s: float = 60) -> float:
    """When the process has its SIGTERM handler (its imports done, its parent-death signal set, its
    deadline about to start): waits for it, as the machine may be busy; returns time.monotonic()."""
    until = time.monotonic() + within_s
    while time.monotonic() < until:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("SigCgt:") and int(line.split()[1], 16) & (1 << (signal.SIGTERM - 1)):
                    return time.monotonic()
        time.sleep(0.01)
    raise AssertionError(f"process {pid} never installed its SIGTERM handler")


def ended(pid: int, within_s: float) -> bool:
    """Whether the process is gone (or a zombie) within the time given."""
    until = time.monotonic() + within_s
    while time.monotonic() < until:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            return True
        if state in ("Z", "X"):
            return True
        time.sleep(0.05)
    return False


@pytest.mark.parametrize(
    "command",
    [["inspect"], ["replay"], ["stream"], ["replay", "2024010112"], ["audit"], ["audit", "--repair"]],
)
def test_without_nats_a_command_says_so_in_one_line_and_exits(command: list[str], tmp_path: Path) -> None:
    proc = start(command, closed_port_env(tmp_path))
    started = catching_sigterm(proc.pid)
    out, err = proc.communicate(timeout=30)
    took = time.monotonic() - started
    assert proc.returncode != 0
    assert took < DEADLINE_S + 2, took
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("cannot reach NATS at nats://hg:***@127.0.0.1:")
    assert lines[0].endswith("is ./just up running?")
    assert PASSWORD not in err + out


def test_without_redis_a_replay_says_so_in_one_line_and_exits(nats_server: Server, tmp_path: Path) -> None:
    env = closed_port_env(tmp_path, nats_url=nats_server.url)
    made = start(["stream"], {**env, "ANALYTICS_CONNECT_DEADLINE_S": "20"})
    assert made.wait(60) == 0
    proc = start(["replay"], env)
    started = catching_sigterm(proc.pid)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode != 0
    assert time.monotonic() - started < DEADLINE_S + 2
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("cannot reach Redis at redis://hg:***@127.0.0.1:")
    assert PASSWORD not in err


@pytest.mark.parametrize(("command", "status"), [(["run"], 128 + signal.SIGTERM), (["audit", "--follow"], 0)])
def test_a_service_keeps_trying_one_line_per_try_and_stops_on_sigterm(
    command: list[str], status: int, tmp_path: Path
) -> None:
    env = closed_port_env(tmp_path, connect_deadline_s=0.5, audit_metrics_port=free_port())
    proc = start(command, env)
    catching_sigterm(proc.pid)
    time.sleep(3)  # a few tries; what is checked is what they printed, not their timing
    proc.send_signal(signal.SIGTERM)
    stopped = time.monotonic()
    _, err = proc.communicate(timeout=10)
    assert time.monotonic() - stopped < 3
    assert proc.returncode == status
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) >= 2
    assert all(line.startswith("WARNING projector: cannot reach NATS at nats://hg:***@") for line in lines)
    assert PASSWORD not in err


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_replay_waiting_for_nats_stops_on_a_signal(sig: signal.Signals, tmp_path: Path) -> None:
    proc = start(["replay"], closed_port_env(tmp_path, connect_deadline_s=120))
    catching_sigterm(proc.pid)
    time.sleep(0.5)  # into its wait for NATS
    proc.send_signal(sig)
    stopped = time.monotonic()
    _, err = proc.communicate(timeout=10)
    assert time.monotonic() - stopped < 3
    assert proc.returncode == 128 + sig
    assert "Traceback" not in err


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the parent-death signal is Linux's")
def test_a_command_ends_when_its_parent_is_killed(tmp_path: Path) -> None:
    env = closed_port_env(tmp_path, connect_deadline_s=120)
    parent = subprocess.Popen(
        ["bash", "-c", f"{sys.executable} -m projector replay & echo $!; wait"],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert parent.stdout is not None
    child = int(parent.stdout.readline())
    catching_sigterm(child)  # the child is up and waiting for NATS
    assert not ended(child, 0)
    parent.kill()  # SIGKILL: the parent cannot pass anything on
    parent.wait()
    assert ended(child, 5)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the parent-death signal is Linux's")
def test_killing_just_ends_the_command_it_ran(tmp_path: Path) -> None:
    just = Path(sys.executable).parent / "just"
    if not just.exists():
        pytest.skip("no just in the virtualenv")
    env = closed_port_env(tmp_path, connect_deadline_s=120)
    proc = subprocess.Popen(
        [str(just), "replay"], env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    child = _child_of(proc.pid, within_s=30)
    catching_sigterm(child)  # the recipe's shell has become python, which is waiting for NATS
    assert not ended(child, 0)
    proc.kill()
    proc.wait()
    assert ended(child, 5)


def _child_of(pid: int, within_s: float) -> int:
    """The python process `just` ran (the recipe execs it, so it is just's own child)."""
    until = time.monotonic() + within_s
    while time.monotonic() < until:
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid and b"-m\x00projector" in cmdline:
                return int(entry)
        time.sleep(0.05)
    raise AssertionError("just did not start the command")


@pytest.mark.parametrize("job", [b"", b'{"settings": {}, "par'])
def test_a_build_without_its_job_says_so_in_one_line(job: bytes, tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "projector", "build"],
        input=job,
        env=closed_port_env(tmp_path),
        cwd=ROOT,
        capture_output=True,
        timeout=30,
    )
    err = proc.stderr.decode()
    assert proc.returncode != 0
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert "the replay that started this build is gone; stopping" in err


def test_settings_know_the_deadline() -> None:
    assert Settings().connect_deadline_s == 5.0


async def test_once_connected_each_try_to_get_nats_back_is_one_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    with running("nats", tmp_path / "nats") as server:
        settings = isolated_settings(server.url, "redis://127.0.0.1:1/0")
        nc = await reach_nats(settings, "hourglass-run", 10)
        try:
            server.stop()

            async def tries() -> list[str]:
                return [r.getMessage() for r in caplog.records if "(hourglass-run): " in r.getMessage()]

            await eventually(tries, lambda said: len(said) >= 3)
            server.start()
            await eventually(tries, lambda said: said[-1].endswith("(hourglass-run): connected again"))
        finally:
            await nc.close()
    assert "Traceback" not in caplog.text
    assert all(record.exc_info is None for record in caplog.records)
    where = redacted(server.url)
    for line in await tries():
        assert line.startswith(f"NATS at {where} (hourglass-run): ")
