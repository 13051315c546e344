"""nats-py's failed tries are logged in one WARNING line each, naming the server and the reason: never
the traceback its default error callback logs, never a password."""

from __future__ import annotations

import asyncio
import logging

import nats
import pytest

from deploy.backoff import NatsLog
from deploy.settings import Settings
from tests.ports import free_port

PASSWORD = "hunter2secret"


async def trying(options: dict[str, object], for_s: float) -> None:
    """nats.connect against a closed port for a while; nats-py retries forever, and may swallow a
    cancellation that lands while it closes a failed try, so it is cancelled until it ends."""
    connecting = asyncio.create_task(nats.connect(**options))  # type: ignore[arg-type]
    await asyncio.wait({connecting}, timeout=for_s)
    while not connecting.done():
        connecting.cancel()
        await asyncio.wait({connecting}, timeout=0.1)
    assert connecting.cancelled()


def said(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    assert all(record.exc_info is None and record.name == "nats" for record in caplog.records)
    assert "Traceback" not in caplog.text
    return caplog.records


async def test_each_failed_try_is_one_warning_line_naming_the_server(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    port = free_port()
    settings = Settings(nats_url=f"nats://hg:{PASSWORD}@127.0.0.1:{port}")
    await trying(settings.nats_options("hourglass-test"), 1.2)
    records = said(caplog)
    assert len(records) >= 2  # a try every reconnect_time_wait (0.5 s)
    for record in records:
        assert record.levelno == logging.WARNING
        line = record.getMessage()
        assert "\n" not in line
        assert line.startswith(
            f"NATS at nats://hg:***@127.0.0.1:{port} (hourglass-test): ConnectionRefusedError"
        )
    assert PASSWORD not in caplog.text


async def test_the_reading_connection_names_its_own_server(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    api = f"nats://127.0.0.1:{free_port()}"
    settings = Settings(nats_url=f"nats://127.0.0.1:{free_port()}", nats_api_url=api)
    await trying(settings.nats_read_options("hourglass-reads"), 0.3)
    records = said(caplog)
    assert records
    assert all(record.getMessage().startswith(f"NATS at {api} (hourglass-reads): ") for record in records)


async def test_a_quiet_log_keeps_the_last_error_for_its_caller(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    quiet = NatsLog("hourglass-check", "nats://127.0.0.1:1", quiet=True)
    await quiet.error(ConnectionRefusedError(111, "Connection refused"))
    assert caplog.records == []
    assert isinstance(quiet.last, ConnectionRefusedError)
    quiet.quiet = False
    await quiet.error(TimeoutError())
    assert [r.getMessage() for r in said(caplog)] == [
        "NATS at nats://127.0.0.1:1 (hourglass-check): TimeoutError"
    ]
