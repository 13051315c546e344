"""The HTTP contract with the I/O seams replaced by in-memory fakes: no servers, milliseconds per test.

Every test runs on both paths (the raw front and Litestar alone): they share one parser, renderer and
error renderer, and these tests hold each to the contract."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import httpx
import pytest
import redis.exceptions

from api.reader import HourTotals
from contract import schema
from contract.hours import HOUR_MS, hour_of, partition_of, subject
from deploy.settings import Settings
from server.app import Clients, create_app
from server.failures import Unavailable
from tests.fakes import MemoryEventLog
from tests.helpers import serve

SETTINGS = Settings(publish_linger_ms=0)
NOW = 1_764_079_200_000


class Hours:
    def __init__(self) -> None:
        self.totals: dict[int, HourTotals] = {}
        self.down = False
        self.raises: Exception | None = None
        """What the client library raises, as a real one would (the reader does not catch it)."""

    async def __call__(self, hour: int) -> HourTotals:
        if self.down:
            raise Unavailable("Redis", "the fake is down")
        if self.raises is not None:
            raise self.raises
        return self.totals.get(hour, HourTotals(0, 0, 0))


@pytest.fixture
def log() -> MemoryEventLog:
    return MemoryEventLog()


@pytest.fixture
def hours() -> Hours:
    return Hours()


@pytest.fixture(params=["fast path", "litestar only"])
def config(request: pytest.FixtureRequest) -> Settings:
    return SETTINGS.replace(http_fast_path=request.param == "fast path")


@pytest.fixture
async def http(config: Settings, log: MemoryEventLog, hours: Hours) -> AsyncIterator[httpx.AsyncClient]:
    async for client in serve(create_app(config, Clients(log=log, hours=hours), clock=lambda: NOW)):
        yield client


@pytest.fixture
async def guarded(config: Settings, log: MemoryEventLog, hours: Hours) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(config.replace(read_tokens="tok"), Clients(log=log, hours=hours), clock=lambda: NOW)
    async for client in serve(app):
        yield client


async def test_a_post_is_appended_to_its_hour_and_partition_subject(
    http: httpx.AsyncClient, log: MemoryEventLog
) -> None:
    response = await http.post(f"/analytics?timestamp={NOW}&user=ann&click", headers={"Idempotency-Key": "k"})
    assert response.status_code == 204
    [(_, subj, payload)] = log.messages
    assert subj == subject(SETTINGS.subject_prefix, hour_of(NOW), partition_of("ann", SETTINGS.partitions))
    assert schema.decode(payload).events == (schema.Event(NOW, "ann", schema.Kind.CLICK, "k"),)


async def test_a_log_that_cannot_store_gets_a_503_and_nothing_is_appended(
    http: httpx.AsyncClient, log: MemoryEventLog
) -> None:
    log.down = True
    response = await http.post(f"/analytics?timestamp={NOW}&user=ann&click")
    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    assert log.messages == []


async def test_a_bad_post_is_a_400_and_appends_nothing(http: httpx.AsyncClient, log: MemoryEventLog) -> None:
    response = await http.post(f"/analytics?timestamp={NOW}&user=%20&click")
    assert response.status_code == 400
    assert response.text.startswith("user: is only whitespace")
    assert log.messages == []


async def test_errors_are_text_or_json_naming_what_is_wrong(
    http: httpx.AsyncClient, log: MemoryEventLog
) -> None:
    json = {"Accept": "application/json"}
    bad = await http.post(f"/analytics?timestamp={NOW}&user=ann", headers=json)
    assert (bad.status_code, bad.headers["content-type"]) == (400, "application/json")
    assert bad.json() == {
        "status": 400,
        "error": "event: is missing: add &click or &impression (or event=click|impression)",
        "parameter": "event",
    }
    log.down = True
    down = await http.post(f"/analytics?timestamp={NOW}&user=ann&click", headers=json)
    assert down.json() == {
        "status": 503,
        "error": "NATS is unavailable; nothing was stored or read, retry later",
        "dependency": "NATS",
    }
    text = await http.post(f"/analytics?timestamp={NOW}&user=ann&click")
    assert text.headers["content-type"] == "text/plain; charset=utf-8"
    assert text.text == "NATS is unavailable; nothing was stored or read, retry later\n"


@pytest.mark.parametrize("accept", ["text/plain", "application/json"])
async def test_an_unchanged_hour_is_a_304_with_the_same_validators(
    http: httpx.AsyncClient, accept: str
) -> None:
    first = await http.get(f"/analytics?timestamp={NOW}", headers={"Accept": accept})
    assert first.status_code == 200
    assert first.headers["vary"] == "Accept"
    again = await http.get(
        f"/analytics?timestamp={NOW}", headers={"Accept": accept, "If-None-Match": first.headers["etag"]}
    )
    assert again.status_code == 304
    assert again.content == b""
    assert {k: again.headers[k] for k in ("etag", "cache-control")} == {
        k: first.headers[k] for k in ("etag", "cache-control")
    }


async def test_read_tokens_guard_every_read(guarded: httpx.AsyncClient) -> None:
    refused = await guarded.get(f"/analytics?timestamp={NOW}")
    assert refused.status_code == 401
    assert refused.headers["www-authenticate"] == 'Bearer realm="hourglass"'
    assert refused.text == "a read token is required: send Authorization: Bearer <token>\n"
    wrong = await guarded.get(f"/analytics?timestamp={NOW}", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    allowed = await guarded.get(f"/analytics?timestamp={NOW}", headers={"Authorization": "Bearer tok"})
    assert allowed.status_code == 200


async def test_a_get_renders_what_the_projections_hold(http: httpx.AsyncClient, hours: Hours) -> None:
    hours.totals[hour_of(NOW)] = HourTotals(3, 2, 1)
    response = await http.get(f"/analytics?timestamp={NOW}")
    assert response.text == "unique_users,3\nclicks,2\nimpressions,1\n"
    as_json = await http.get(f"/analytics?timestamp={NOW - HOUR_MS}", headers={"Accept": "application/json"})
    assert as_json.json()["hour_start"] == "2025-11-25T13:00:00Z"


async def test_projections_that_cannot_answer_give_a_503(http: httpx.AsyncClient, hours: Hours) -> None:
    hours.down = True
    response = await http.get(f"/analytics?timestamp={NOW}")
    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    assert response.text == "Redis is unavailable; nothing was stored or read, retry later\n"


@pytest.mark.parametrize(
    "path",
    [
        "/analytics/range?from=0&to=0",
        f"/analytics/range?from={NOW}&to={NOW}",
        f"/analytics/range?from={NOW}&to={NOW - 2 * 24 * HOUR_MS}&granularity=day&tz=Asia/Kathmandu",
        "/analytics?from=0&to=0",
    ],
)
async def test_an_empty_range_is_a_200_with_no_rows_and_a_zero_total_read_from_nowhere(
    http: httpx.AsyncClient, path: str
) -> None:
    """Nothing to read, so no Redis is asked (these fakes have none: a read would be a 503)."""
    response = await http.get(path)
    assert response.status_code == 200
    assert response.text.splitlines()[1:] == ["total,0,0,0"]
    as_json = (await http.get(path, headers={"Accept": "application/json"})).json()
    assert as_json["buckets"] == []
    assert as_json["total"] == {"unique_users": 0, "clicks": 0, "impressions": 0}


@pytest.mark.parametrize(
    "raised",
    [
        redis.exceptions.ClusterDownError("The cluster is down"),
        redis.exceptions.TryAgainError("Multiple keys request during rehashing of slot"),
        redis.exceptions.MasterDownError("Link with MASTER is down"),
        redis.exceptions.BusyLoadingError("Valkey is loading the dataset in memory"),
        redis.exceptions.RedisClusterException("Redis Cluster cannot be connected"),
        redis.exceptions.ConnectionError("Error 111 connecting"),
    ],
    ids=lambda e: type(e).__name__,
)
async def test_a_cluster_between_states_gives_a_503_not_a_500(
    http: httpx.AsyncClient, hours: Hours, raised: Exception
) -> None:
    """A slot moving or a shard failing over is Redis unavailable for now (a CLUSTERDOWN once gave a
    500 during a slot move in CI)."""
    hours.raises = raised
    response = await http.get(f"/analytics?timestamp={NOW}")
    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"


async def test_the_dashboard_is_one_small_page_that_fetches_nothing_from_elsewhere(
    http: httpx.AsyncClient,
) -> None:
    page = await http.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert len(page.content) <= 100_000
    text = page.text
    # No CDN, no second file: every URL it names is this server's (the SVG namespace is a name, not a fetch).
    assert re.findall(r"https?://[^\s\"'`]+", text) == ["http://www.w3.org/2000/svg"] * text.count(
        "w3.org/2000/svg"
    )
    assert "<script src" not in text
    assert "<link" not in text
    assert "/analytics?from=" in text  # drawn from the range API
    assert "/analytics/live" in text  # and the live stream
    assert "<table>" in text  # the numbers also as a table
    assert "UTC" in text
    assert (await http.head("/")).status_code == 200
