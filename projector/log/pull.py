"""A lean JetStream pull reader: batches of messages from a consumer, for the projector and replay.

nats-py's `fetch` awaits each message with its own timeout (a task and a timer per message), which
made it most of the projector's time on a stream of small, live-written messages. This asks the
consumer for a batch on the raw protocol (`$JS.API.CONSUMER.MSG.NEXT`) and takes whatever has
arrived for its inbox in one go, waiting only when nothing has. Messages for that inbox are cut
straight out of the connection's read buffer, many per read, before nats-py parses each one, builds
a `Msg` and queues it: on small messages those steps cost as much as everything the projector does
with them. Each message's position comes from its reply subject, parsed once.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Awaitable, Callable

import msgspec
from nats.aio.client import Client as NATS
from nats.aio.subscription import Subscription
from nats.protocol.parser import AWAITING_CONTROL_LINE, AWAITING_MSG_PAYLOAD

from projector.log.fetched import Fetched

FETCH_MAX_BYTES = 4 << 20
"""A fetch may ask for many small live-written messages, but never for more than this many bytes
(messages of 1,000 events are about 60 kB each), so the connection stays clear of nats-server's
slow-consumer limit."""


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


class Puller:
    """Reads one durable or ephemeral pull consumer of `stream` (it must exist)."""

    def __init__(self, nc: NATS, stream: str, consumer: str) -> None:
        self._nc = nc
        self._next = f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}"
        self._inbox = nc.new_inbox()
        self._sub: Subscription | None = None
        self._tapped = _Inbox()

    async def _subscribe(self) -> None:
        if self._sub is None:
            taps = _taps(self._nc)
            self._sub = await self._nc.subscribe(self._inbox)
            taps[self._sub._id] = self._tapped

    async def fetch(self, batch: int, wait_s: float, max_bytes: int = FETCH_MAX_BYTES) -> Fetched:
        """Up to `batch` messages and about `max_bytes`: those available now, or, when there are none,
        the first to arrive within `wait_s` seconds (then TimeoutError). Status replies are dropped; a
        message that arrives after its request gave up is kept for the next call."""
        await self._subscribe()
        got = Fetched()
        self._drain(batch, got)
        if got:
            return got
        await self._ask({"batch": batch, "no_wait": True, "max_bytes": max_bytes})
        await self._until_status(batch, wait_s, got)
        if got:
            return got
        # Nothing there: wait for one message, then take what else has arrived.
        expires = max(0.05, wait_s - 0.05)
        await self._ask({"batch": 1, "expires": int(expires * 1e9)})
        await self._until_status(1, wait_s, got)
        if not got:
            raise TimeoutError(f"no message within {wait_s}s")
        if batch > 1:
            await self._ask({"batch": batch - 1, "no_wait": True, "max_bytes": max_bytes})
            await self._until_status(batch, wait_s, got)
        return got

    async def ack(self, reply: bytes) -> None:
        """Acknowledge the message of this reply subject (with AckPolicy.ALL: every one up to it)."""
        await self._nc.publish(reply.decode(), b"+ACK")

    async def _ask(self, request: dict[str, object]) -> None:
        await self._nc.publish(self._next, msgspec.json.encode(request), reply=self._inbox)

    async def _until_status(self, batch: int, wait_s: float, got: Fetched) -> None:
        """Messages of the last request into `got`, until it holds `batch` or a status says the
        request is done."""
        deadline = time.monotonic() + wait_s
        while len(got) < batch:
            if not self._tapped.arrived:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                await self._tapped.wait(left)
                continue
            if not self._drain(batch, got, stop_at_status=True):
                break

    def _drain(self, batch: int, into: Fetched, stop_at_status: bool = False) -> bool:
        """Take what has arrived, up to `batch`; False when a status ended the request (if asked to
        stop there). Leftover statuses from earlier requests are skipped."""
        arrived = self._tapped.arrived
        add = into.add
        room = batch - len(into)
        while room > 0 and arrived:
            subject, reply, data = arrived.popleft()
            if not reply:  # only JetStream's own status replies come without a reply subject
                if stop_at_status:
                    return False
                continue
            add(subject, reply, data)
            room -= 1
        return True

    async def close(self) -> None:
        if self._sub is not None:
            _taps(self._nc).pop(self._sub._id, None)
            await self._sub.unsubscribe()
            self._sub = None
