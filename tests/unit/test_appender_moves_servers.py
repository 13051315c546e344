"""An HTTP worker whose NATS server stops acknowledging (cut off from the stream's leader and from a
quorum, its client connection still up) moves to another server after SWITCH_AFTER timeouts in a row;
timeouts of appends sent before a move do not count against the server moved to."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from ingest.appender import SWITCH_AFTER, Appender
from server.failures import Unavailable


class SilentNats:
    """A connection whose server never answers a publish, unless told to, and which counts moves."""

    def __init__(self) -> None:
        self.moves = 0
        self.answer = False
        self.connected_url = None
        self._cb: Any = None

    def new_inbox(self) -> str:
        return "_INBOX.test"

    async def subscribe(self, subject: str, cb: Any) -> object:
        self._cb = cb
        return object()

    async def publish(self, subject: str, payload: bytes, reply: str) -> None:
        if self.answer:
            msg = type("Msg", (), {"subject": reply, "data": b'{"stream":"S","seq":7}', "headers": None})
            asyncio.get_running_loop().call_soon(lambda: asyncio.ensure_future(self._cb(msg)))

    async def force_reconnect(self) -> None:
        self.moves += 1


async def times_out(appender: Appender) -> None:
    with pytest.raises(Unavailable, match="no PubAck within"):
        await appender.append("s", b"x", timeout_s=0.01)


async def test_timeouts_in_a_row_move_the_worker_to_another_server_once() -> None:
    nc = SilentNats()
    appender = Appender(nc)  # type: ignore[arg-type]
    for _ in range(SWITCH_AFTER - 1):
        await times_out(appender)
    assert nc.moves == 0
    await times_out(appender)
    assert nc.moves == 1


async def test_timeouts_of_appends_sent_before_the_move_do_not_count() -> None:
    nc = SilentNats()
    appender = Appender(nc)  # type: ignore[arg-type]
    sent_before = [asyncio.ensure_future(times_out(appender)) for _ in range(2 * SWITCH_AFTER)]
    await asyncio.gather(*sent_before)
    assert nc.moves == 1  # the whole wave was sent before the move: one move, not two


async def test_an_acknowledged_append_starts_the_count_again() -> None:
    nc = SilentNats()
    appender = Appender(nc)  # type: ignore[arg-type]
    for _ in range(SWITCH_AFTER - 1):
        await times_out(appender)
    nc.answer = True
    assert await appender.append("s", b"x", timeout_s=5) == 7
    nc.answer = False
    for _ in range(SWITCH_AFTER - 1):
        await times_out(appender)
    assert nc.moves == 0
