"""A lean JetStream pull reader: batches of messages from a consumer, for the projector and replay.

nats-py's `fetch` awaits each message with its own timeout (a task and a timer per message), which
made it most of the projector's time on a stream of small, live-written messages. This asks the
consumer for a batch on the raw protocol (`$JS.API.CONSUMER.MSG.NEXT`) and takes whatever has
arrived for its inbox in one go, waiting only when nothing has. Messages for that inbox are cut
straight out of the connection's read buffer (`parser_tap.py`, the only code that touches nats-py's
internals). Each message's position comes from its reply subject, parsed once.

Those internals are checked when the first reader is built for a connection. When one is missing or
shaped otherwise, or when ANALYTICS_PULL_READER=public, the same requests are read through a plain
subscription with a callback (nats-py's public API): same protocol, same `Fetched` columns; one
WARNING names what is missing, and the gauge `hourglass_projector_pull_reader_fallback` is 1. Measured
with `./just bench-projector --pull-reader fast|public` (alternating runs, 2 shared cores): at one event
a message the projector's Python CPU per event was 11-12 us with the hooks and 17-20 us without (replay
23 against 29-35 us); at six events a message the two could not be told apart (5.5-7.7 us both).

nats.py pull request 862 (an `async for` over a subscription about 90 times faster) is not in nats-py
2.16.0: its iterator still starts a task and an `asyncio.wait` per message. Until a release carries
it, the hooks stay and the public reader is only the fallback.
"""

from __future__ import annotations

import contextlib
import logging
import time
from importlib.metadata import PackageNotFoundError, version

import msgspec
import nats.errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from projector import metrics
from projector.log.fetched import Fetched
from projector.log.parser_tap import _Inbox, _taps, missing_internals

log = logging.getLogger("projector")

FETCH_MAX_BYTES = 4 << 20
"""A fetch may ask for many small live-written messages, but never for more than this many bytes
(messages of 1,000 events are about 60 kB each), so the connection stays clear of nats-server's
slow-consumer limit."""


class Puller:
    """Reads one durable or ephemeral pull consumer of `stream` (it must exist)."""

    def __init__(self, nc: NATS, stream: str, consumer: str, reader: str = "auto") -> None:
        self._nc = nc
        self._next = f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}"
        self._inbox = nc.new_inbox()
        self._sub: Subscription | None = None
        self._tapped = _Inbox()
        self._fast = uses_fast_reader(nc, reader)

    async def _subscribe(self) -> None:
        if self._sub is not None:
            return
        if self._fast:
            taps = _taps(self._nc)
            self._sub = await self._nc.subscribe(self._inbox)
            taps[self._sub._id] = self._tapped
        else:
            self._sub = await self._nc.subscribe(self._inbox, cb=self._arrived)

    async def _arrived(self, msg: Msg) -> None:
        """The public reader: nats-py built the message; it goes where the hooks would have put it."""
        self._tapped.put(msg.subject.encode(), msg.reply.encode(), msg.data)

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
            if self._fast:
                _taps(self._nc).pop(self._sub._id, None)
            # A sibling's failure may have closed the connection already: its subscriptions went with it.
            with contextlib.suppress(nats.errors.ConnectionClosedError):
                await self._sub.unsubscribe()
            self._sub = None


def uses_fast_reader(nc: NATS, reader: str = "auto") -> bool:
    """Whether readers on this connection hook nats-py's parser; decided (and said) once per connection.

    `reader` is ANALYTICS_PULL_READER: `public` never hooks, `fast` refuses to run without the hooks,
    `auto` hooks when every internal is there and otherwise falls back with one WARNING."""
    decided: bool | None = getattr(nc, "_hourglass_fast_reader", None)
    if decided is not None:
        return decided
    missing = [] if reader == "public" else missing_internals(nc)
    if reader == "fast" and missing:
        raise RuntimeError(
            f"ANALYTICS_PULL_READER=fast, but nats-py {_nats_version()} lacks what it hooks: "
            + ", ".join(missing)
        )
    fast = reader != "public" and not missing
    if missing:
        log.warning(
            "nats-py %s lacks what the fast pull reader hooks (%s); reading through its public API "
            "instead, which is slower (pyproject.toml pins the tested nats-py)",
            _nats_version(),
            ", ".join(missing),
        )
    elif not fast:
        log.info("pull reader: nats-py's public API (ANALYTICS_PULL_READER=public)")
    metrics.PULL_READER_FALLBACK.set(0 if fast else 1)
    nc._hourglass_fast_reader = fast  # type: ignore[attr-defined]
    return fast


def _nats_version() -> str:
    try:
        return version("nats-py")
    except PackageNotFoundError:
        return "(unknown version)"
