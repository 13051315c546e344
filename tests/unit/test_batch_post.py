"""POST /analytics/batch with the event log replaced by an in-memory fake: 200 only after every accepted
event is appended, the answer's counts and refused lines, and a clear 4xx or 503 that appends nothing."""

from __future__ import annotations

import gzip
import json
from collections.abc import AsyncIterator

import httpx
import pytest

from contract import schema
from deploy.settings import Settings
from server.app import Clients, create_app
from tests.fakes import MemoryEventLog
from tests.helpers import serve
from tests.unit.test_http_with_fakes import NOW, Hours

SETTINGS = Settings(publish_linger_ms=0, batch_max_events=50, batch_max_bytes=20_000)
NDJSON = {"Content-Type": "application/x-ndjson"}


@pytest.fixture
def log() -> MemoryEventLog:
    return MemoryEventLog()


async def client(log: MemoryEventLog, **changes: object) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(SETTINGS.replace(**changes), Clients(log=log, hours=Hours()), clock=lambda: NOW)
    async for http in serve(app):
        yield http


@pytest.fixture
async def http(log: MemoryEventLog) -> AsyncIterator[httpx.AsyncClient]:
    async for one in client(log):
        yield one


def lines(*events: dict[str, object]) -> bytes:
    return b"".join(json.dumps(e).encode() + b"\n" for e in events)


def stored(log: MemoryEventLog) -> list[schema.Event]:
    return [event for _, _, payload in log.messages for event in schema.decode(payload).events]


async def test_a_batch_is_answered_after_every_accepted_event_is_appended(
    http: httpx.AsyncClient, log: MemoryEventLog
) -> None:
    body = lines(
        *({"timestamp": NOW - h * 3_600_000, "user": f"u{h}", "event": "click"} for h in range(6)),
        {"timestamp": NOW, "user": "", "event": "click"},
        {"timestamp": NOW, "user": "ann", "event": "impression", "key": "k"},
        {"timestamp": NOW, "user": "ann", "event": "impression", "key": "k"},
    )
    answer = await http.post("/analytics/batch", content=body, headers=NDJSON)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "application/json"
    assert answer.json() == {
        "accepted": 7,
        "duplicates": 1,
        "rejected": [{"line": 7, "error": "user: is empty"}],
    }
    assert sorted(e.user for e in stored(log)) == ["ann", "u0", "u1", "u2", "u3", "u4", "u5"]
    assert len({subj for _, subj, _ in log.messages}) >= 6  # one subject per hour at least


async def test_a_gzipped_csv_batch_counts_like_its_ndjson(
    http: httpx.AsyncClient, log: MemoryEventLog
) -> None:
    csv = f"timestamp,user,event,campaign\n{NOW},ann,click,spring\n{NOW},bob,impression,\n".encode()
    headers = {"Content-Type": "text/csv; charset=utf-8", "Content-Encoding": "gzip"}
    answer = await http.post("/analytics/batch", content=gzip.compress(csv), headers=headers)
    assert answer.json() == {"accepted": 2, "duplicates": 0, "rejected": []}
    assert stored(log) == [
        schema.Event(NOW, "ann", schema.Kind.CLICK, None, (("campaign", "spring"),)),
        schema.Event(NOW, "bob", schema.Kind.IMPRESSION),
    ]


async def test_a_retried_batch_with_a_key_stores_the_same_keys(
    http: httpx.AsyncClient, log: MemoryEventLog
) -> None:
    body = lines(
        {"timestamp": NOW, "user": "ann", "event": "click"},
        {"timestamp": NOW, "user": "bob", "event": "click"},
    )
    for _ in range(2):
        answer = await http.post(
            "/analytics/batch", content=body, headers={**NDJSON, "Idempotency-Key": "b1"}
        )
        assert answer.status_code == 200
    first, second = stored(log)[:2], stored(log)[2:]
    assert [e.key for e in first] == ["b1/1", "b1/2"]
    assert first == second  # the projector counts each (user, key) once within the window


@pytest.mark.parametrize(
    ("body", "headers", "status", "says"),
    [
        (
            lines(*({"timestamp": NOW, "user": f"u{i}", "event": "click"} for i in range(51))),
            NDJSON,
            413,
            "more than 50 events",
        ),
        (b"{}\n" * 7000, NDJSON, 413, "more than 20000 bytes"),
        (
            gzip.compress(b"\n" * 10_000_000),
            {**NDJSON, "Content-Encoding": "gzip"},
            413,
            "after decompression",
        ),
        (b"x", {"Content-Type": "application/json"}, 415, "application/x-ndjson or text/csv"),
        (b"x", {**NDJSON, "Content-Encoding": "br"}, 415, "Content-Encoding: br"),
        (b"not json\n", NDJSON, 400, "body: line 1 is not JSON"),
        (b"", NDJSON, 400, "body: holds no events"),
        (
            lines({"timestamp": NOW, "user": "a", "event": "click"}),
            {**NDJSON, "Idempotency-Key": ""},
            400,
            "Idempotency-Key",
        ),
    ],
)
async def test_a_batch_it_cannot_take_is_a_clear_4xx_and_appends_nothing(
    http: httpx.AsyncClient, log: MemoryEventLog, body: bytes, headers: dict[str, str], status: int, says: str
) -> None:
    answer = await http.post("/analytics/batch", content=body, headers=headers)
    assert answer.status_code == status, answer.text
    assert says in answer.text
    assert log.messages == []


async def test_a_log_that_cannot_store_is_a_503_with_retry_after(
    http: httpx.AsyncClient, log: MemoryEventLog
) -> None:
    log.down = True
    answer = await http.post(
        "/analytics/batch", content=lines({"timestamp": NOW, "user": "a", "event": "click"}), headers=NDJSON
    )
    assert answer.status_code == 503
    assert answer.headers["retry-after"]


async def test_the_rate_limit_counts_a_batchs_events(log: MemoryEventLog) -> None:
    body = lines(*({"timestamp": NOW, "user": f"u{i}", "event": "click"} for i in range(20)))
    async for http in client(log, post_rate_per_s=0.01, post_burst=10):
        first = await http.post("/analytics/batch", content=body, headers=NDJSON)
        assert first.status_code == 200  # let through whole: the client owed nothing
        again = await http.post("/analytics/batch", content=body, headers=NDJSON)
        assert again.status_code == 429  # 10 events past the burst are owed
        single = await http.post(f"/analytics?timestamp={NOW}&user=x&click")
        assert single.status_code == 429
    assert len(stored(log)) == 20
