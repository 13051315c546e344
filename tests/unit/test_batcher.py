"""Group commit, with an in-memory append in place of JetStream (the batching logic is pure)."""

from __future__ import annotations

import asyncio

import pytest

from contract import schema
from contract.schema import Event, Kind
from ingest.batcher import Batcher
from server.failures import Unavailable


class Log:
    """An append-only log that can be told to stall or to fail."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, tuple[Event, ...]]] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.fail: Exception | None = None

    async def send(self, subject: str, payload: bytes) -> None:
        await self.gate.wait()
        if self.fail is not None:
            raise self.fail
        self.messages.append((subject, schema.decode(payload).events))


def ev(i: int) -> Event:
    return Event(ts=i, user=f"u{i}", kind=Kind.CLICK)


async def test_one_lone_event_is_sent_at_once_as_a_batch_of_one() -> None:
    log = Log()
    await Batcher(log.send).submit("s", ev(1))
    assert log.messages == [("s", (ev(1),))]


async def test_events_arriving_together_share_one_message_and_every_one_is_acknowledged() -> None:
    log = Log()
    batcher = Batcher(log.send, max_in_flight=1)
    await asyncio.gather(*(batcher.submit("s", ev(i)) for i in range(50)))
    assert sum(len(events) for _, events in log.messages) == 50
    assert len(log.messages) < 50
    assert [e for _, events in log.messages for e in events] == [ev(i) for i in range(50)]


async def test_events_wait_while_appends_are_in_flight_then_go_together() -> None:
    log = Log()
    log.gate.clear()
    batcher = Batcher(log.send, max_in_flight=1)
    first = asyncio.create_task(batcher.submit("s", ev(0)))
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    rest = [asyncio.create_task(batcher.submit("s", ev(i))) for i in range(1, 20)]
    await asyncio.sleep(0)
    assert not first.done()
    log.gate.set()
    await asyncio.gather(first, *rest)
    assert [len(events) for _, events in log.messages] == [1, 19]


async def test_a_full_batch_is_sent_without_waiting() -> None:
    log = Log()
    batcher = Batcher(log.send, max_events=10, max_in_flight=1)
    await asyncio.gather(*(batcher.submit("s", ev(i)) for i in range(35)))
    assert max(len(events) for _, events in log.messages) == 10


async def test_subjects_are_batched_apart() -> None:
    log = Log()
    batcher = Batcher(log.send)
    await asyncio.gather(*(batcher.submit(f"s{i % 3}", ev(i)) for i in range(30)))
    for subject, events in log.messages:
        assert {f"s{e.ts % 3}" for e in events} == {subject}


async def test_a_batch_whose_append_failed_fails_every_request_in_it() -> None:
    log = Log()
    log.fail = Unavailable("NATS", "timeout")
    batcher = Batcher(log.send, max_in_flight=1)
    results = await asyncio.gather(*(batcher.submit("s", ev(i)) for i in range(25)), return_exceptions=True)
    assert all(isinstance(r, Unavailable) for r in results)
    assert log.messages == []
    log.fail = None
    await batcher.submit("s", ev(99))  # and the next batch goes through
    assert log.messages == [("s", (ev(99),))]


async def test_close_flushes_what_is_buffered() -> None:
    log = Log()
    batcher = Batcher(log.send, linger_s=60)
    waiting = asyncio.create_task(batcher.submit("s", ev(1)))
    await asyncio.sleep(0)
    await batcher.close()
    await waiting
    assert log.messages == [("s", (ev(1),))]


@pytest.mark.parametrize("linger", [0.0, 0.001])
async def test_no_event_is_lost_or_duplicated_under_concurrency(linger: float) -> None:
    log = Log()
    batcher = Batcher(log.send, max_events=7, linger_s=linger, max_in_flight=2)
    await asyncio.gather(*(batcher.submit(f"s{i % 2}", ev(i)) for i in range(500)))
    sent = sorted(e.ts for _, events in log.messages for e in events)
    assert sent == list(range(500))


async def test_a_batch_requests_events_go_per_subject_in_messages_of_at_most_the_batch_size() -> None:
    log = Log()
    items = [("a" if i % 3 else "b", ev(i)) for i in range(25)]
    await Batcher(log.send, max_events=5).submit_all(items)
    sent = {subject: [e for s, events in log.messages if s == subject for e in events] for subject in "ab"}
    assert sent == {s: [e for subject, e in items if subject == s] for s in "ab"}  # each in line order
    assert all(len(events) <= 5 for _, events in log.messages)
    assert len(log.messages) == 4 + 2  # 16 events of a, 9 of b


async def test_a_batch_request_whose_append_fails_raises_after_the_others_are_done() -> None:
    log = Log()
    log.fail = Unavailable("NATS", "down")
    with pytest.raises(Unavailable):
        await Batcher(log.send, max_events=5).submit_all([("a", ev(i)) for i in range(12)])
