"""The fast pull reader's hooks into nats-py's private parser state, fenced: what they need is checked
before they go in, and nothing else in the projector touches nats-py's internals.

Messages for a reader's inbox are cut straight out of the connection's read buffer, many per read,
before nats-py parses each one, builds a `Msg` and queues it: on small messages those steps cost as
much as everything the projector does with them. What is hooked (nats-py 2.16, which pyproject.toml
pins): the parser `Client._ps` (`parse`, `buf`, `state`, `needed`, `header_needed`, `msg_arg`), its
states `AWAITING_CONTROL_LINE` and `AWAITING_MSG_PAYLOAD`, `Client._process_msg`, `Client.stats` and a
subscription's `_id`. `missing_internals` names any that is absent or shaped otherwise; the reader then
uses nats-py's public API instead (see `pull.py`).
"""

from __future__ import annotations

import asyncio
import collections
import inspect
from collections.abc import Awaitable, Callable

from nats.aio.client import Client as NATS
from nats.aio.subscription import Subscription
from nats.protocol import parser as nats_parser

AWAITING_CONTROL_LINE: int = getattr(nats_parser, "AWAITING_CONTROL_LINE", -1)
AWAITING_MSG_PAYLOAD: int = getattr(nats_parser, "AWAITING_MSG_PAYLOAD", -1)


def missing_internals(nc: NATS) -> list[str]:
    """The internals the hooks need that this nats-py lacks, or has in another shape (empty: none)."""
    missing = [
        f"nats.protocol.parser.{name}"
        for name, value in (
            ("AWAITING_CONTROL_LINE", AWAITING_CONTROL_LINE),
            ("AWAITING_MSG_PAYLOAD", AWAITING_MSG_PAYLOAD),
        )
        if not isinstance(value, int) or value < 0
    ]
    process = getattr(nc, "_process_msg", None)
    if not callable(process) or _arity(process) != 5:
        missing.append("Client._process_msg(sid, subject, reply, data, headers)")
    stats = getattr(nc, "stats", None)
    if not isinstance(stats, dict) or not isinstance(stats.get("in_msgs"), int):
        missing.append("Client.stats['in_msgs']")
    parser = getattr(nc, "_ps", None)
    if parser is None:
        missing.append("Client._ps")
    else:
        if not callable(getattr(parser, "parse", None)):
            missing.append("Client._ps.parse")
        shapes = (
            ("buf", bytearray),
            ("state", int),
            ("needed", int),
            ("header_needed", int),
            ("msg_arg", dict),
        )
        missing += [
            f"Client._ps.{name}" for name, kind in shapes if not isinstance(getattr(parser, name, None), kind)
        ]
    try:
        sid = getattr(Subscription(nc, id=1), "_id", None)
    except Exception:
        sid = None
    if sid != 1:
        missing.append("Subscription._id")
    return missing


def _arity(fn: Callable[..., object]) -> int:
    try:
        return len(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        return -1


ProcessMsg = Callable[[int, bytes, bytes, bytes, bytes], Awaitable[None]]


class _Inbox:
    """What the protocol parser handed over for one subscription: (subject, reply, payload)."""

    __slots__ = ("arrived", "waiter")

    def __init__(self) -> None:
        self.arrived: collections.deque[tuple[bytes, bytes, bytes]] = collections.deque()
        self.waiter: asyncio.Future[None] | None = None

    def put(self, subject: bytes, reply: bytes, data: bytes) -> None:
        self.arrived.append((subject, reply, data))
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    async def wait(self, timeout_s: float) -> None:
        """Until something arrives or `timeout_s` passes."""
        self.waiter = asyncio.get_running_loop().create_future()
        try:
            async with asyncio.timeout(timeout_s):
                await self.waiter
        except TimeoutError:
            pass
        finally:
            self.waiter = None


def _taps(nc: NATS) -> dict[int, _Inbox]:
    """The client's inboxes read raw, by subscription id. The hook goes in once per client."""
    taps: dict[int, _Inbox] | None = getattr(nc, "_hourglass_taps", None)
    if taps is not None:
        return taps
    found: dict[int, _Inbox] = {}
    process: ProcessMsg = nc._process_msg

    async def process_msg(sid: int, subject: bytes, reply: bytes, data: bytes, headers: bytes) -> None:
        inbox = found.get(sid)
        if inbox is None:
            await process(sid, subject, reply, data, headers)
        else:
            inbox.put(subject, reply, data)

    parser = nc._ps
    parse: Callable[[bytes], Awaitable[None]] = parser.parse

    async def parse_fast(data: bytes = b"") -> None:
        # Leading plain MSG frames for these inboxes are cut out of the buffer here, many per read;
        # anything else (and whatever follows it) goes through nats-py's parser as before.
        buffer = parser.buf
        buffer.extend(data)
        if parser.state == AWAITING_MSG_PAYLOAD and not parser.header_needed:
            # nats-py read the frame's first line in an earlier read; finish the frame here.
            inbox = found.get(parser.msg_arg["sid"])
            if inbox is not None:
                if len(buffer) < parser.needed + 2:
                    return
                inbox.put(parser.msg_arg["subject"], parser.msg_arg["reply"], bytes(buffer[: parser.needed]))
                del buffer[: parser.needed + 2]
                parser.state = AWAITING_CONTROL_LINE
        if parser.state == AWAITING_CONTROL_LINE and buffer.startswith(b"MSG "):
            taken, unfinished = _take_frames(buffer, found)
            nc.stats["in_msgs"] += taken
            if unfinished:
                return  # the rest of that frame comes with the next read
        if buffer:
            await parse(b"")

    nc._hourglass_taps = found  # type: ignore[attr-defined]
    nc._process_msg = process_msg  # type: ignore[method-assign]
    parser.parse = parse_fast  # type: ignore[method-assign]
    return found


def _take_frames(buffer: bytearray, inboxes: dict[int, _Inbox]) -> tuple[int, bool]:
    """Hand complete leading `MSG <subject> <sid> [<reply>] <size>` frames of these inboxes over,
    and cut them from the buffer; stop at anything else. Returns how many were taken, and whether
    the buffer now holds only the start of one more such frame."""
    pos, end_of_data, taken, unfinished = 0, len(buffer), 0, False
    with memoryview(buffer) as view:
        while buffer.startswith(b"MSG ", pos):
            end = buffer.find(b"\r\n", pos)
            if end < 0:
                unfinished = end_of_data - pos < 1024  # a control line is never that long
                break
            parts = bytes(view[pos + 4 : end]).split(b" ")
            if len(parts) == 4:
                subject, sid, reply, size = parts
            elif len(parts) == 3:
                subject, sid, size = parts
                reply = b""
            else:
                break
            if not (sid.isdigit() and size.isdigit()):
                break
            inbox = inboxes.get(int(sid))
            if inbox is None:
                break
            start = end + 2
            stop = start + int(size)
            if stop + 2 > end_of_data:
                unfinished = True
                break
            inbox.put(subject, reply, bytes(view[start:stop]))
            pos = stop + 2
            taken += 1
    if pos:
        del buffer[:pos]
    return taken, unfinished
