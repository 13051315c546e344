"""A lean JetStream pull reader: batches of messages from a consumer, for the projector and replay.

nats-py's `fetch` awaits each message with its own timeout (a task and a timer per message), which
made it most of the projector's time on a stream of small, live-written messages. This asks the
consumer for a batch on the raw protocol (`$JS.API.CONSUMER.MSG.NEXT`) and takes whatever has
arrived from its inbox in one go, waiting only when nothing has. Each message's position comes from
its reply subject, parsed once.
"""

from __future__ import annotations

import asyncio
import time
from typing import NamedTuple

import msgspec
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription


class Meta(NamedTuple):
    """Where a message sits, from its reply subject `$JS.ACK.[<domain>.<account>.]<stream>.<consumer>.
    <delivered>.<stream seq>.<consumer seq>.<timestamp ns>.<pending>[.<token>]`."""

    stream_seq: int
    consumer_seq: int
    delivered: int
    stream_ms: int
    pending: int


def meta_of(reply: str) -> Meta:
    tokens = reply.split(".")
    at = 4 if len(tokens) == 9 else 6  # the older form has no domain and account hash
    return Meta(
        int(tokens[at + 1]),
        int(tokens[at + 2]),
        int(tokens[at]),
        int(tokens[at + 3]) // 1_000_000,
        int(tokens[at + 4]),
    )


class Pulled(NamedTuple):
    msg: Msg
    meta: Meta


class Puller:
    """Reads one durable or ephemeral pull consumer of `stream` (it must exist)."""

    def __init__(self, nc: NATS, stream: str, consumer: str) -> None:
        self._nc = nc
        self._next = f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}"
        self._inbox = nc.new_inbox()
        self._sub: Subscription | None = None

    async def _queue(self) -> asyncio.Queue[Msg]:
        if self._sub is None:
            # Unbounded here: what arrives is bounded by the batches this reader asks for.
            self._sub = await self._nc.subscribe(self._inbox, pending_msgs_limit=0, pending_bytes_limit=0)
        return self._sub._pending_queue  # draining it whole is the point

    async def fetch(self, batch: int, wait_s: float) -> list[Pulled]:
        """Up to `batch` messages: those available now, or, when there are none, the first to arrive
        within `wait_s` seconds (then TimeoutError). Status replies are dropped; a message that arrives
        after its request gave up is kept for the next call."""
        queue = await self._queue()
        got = self._drain(queue, batch, [])
        if got:
            return got
        await self._ask({"batch": batch, "no_wait": True})
        got = await self._until_status(queue, batch, wait_s)
        if got:
            return got
        # Nothing there: wait for one message, then take what else has arrived.
        expires = max(0.05, wait_s - 0.05)
        await self._ask({"batch": 1, "expires": int(expires * 1e9)})
        got = await self._until_status(queue, 1, wait_s)
        if not got:
            raise TimeoutError(f"no message within {wait_s}s")
        if batch > 1:
            await self._ask({"batch": batch - 1, "no_wait": True})
            got += await self._until_status(queue, batch - 1, wait_s)
        return got

    async def _ask(self, request: dict[str, object]) -> None:
        await self._nc.publish(self._next, msgspec.json.encode(request), reply=self._inbox)

    async def _until_status(self, queue: asyncio.Queue[Msg], batch: int, wait_s: float) -> list[Pulled]:
        """Messages of the last request, until it has sent `batch` or a status says it is done."""
        got: list[Pulled] = []
        deadline = time.monotonic() + wait_s
        while len(got) < batch:
            if queue.empty():
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                try:
                    async with asyncio.timeout(left):
                        msg = await queue.get()
                except TimeoutError:
                    break
                if _status(msg) is not None:
                    break
                got.append(Pulled(msg, meta_of(msg.reply)))
            if self._drain(queue, batch, got, stop_at_status=True) is None:
                break
        return got

    def _drain(
        self, queue: asyncio.Queue[Msg], batch: int, into: list[Pulled], stop_at_status: bool = False
    ) -> list[Pulled] | None:
        """Take what has arrived, up to `batch`; None when a status ended the request (if asked to
        stop there). Leftover statuses from earlier requests are skipped."""
        while len(into) < batch and not queue.empty():
            msg = queue.get_nowait()
            if _status(msg) is not None:
                if stop_at_status:
                    return None
                continue
            into.append(Pulled(msg, meta_of(msg.reply)))
        return into

    async def close(self) -> None:
        if self._sub is not None:
            await self._sub.unsubscribe()
            self._sub = None


def _status(msg: Msg) -> str | None:
    """The status code of a control reply, else None. Only JetStream's own replies lack a reply
    subject: every delivered message carries its `$JS.ACK...` one, whatever a publisher put in it."""
    if msg.reply or not msg.headers:
        return None
    return msg.headers.get("Status")
