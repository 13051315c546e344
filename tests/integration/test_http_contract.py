"""The HTTP contract on real NATS and Valkey: POST stores, GET reads its hour, bad input stores nothing."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from nats.aio.client import Client as NATS
from prometheus_client import REGISTRY, generate_latest
from redis.asyncio import Redis

from contract import schema
from contract.hours import HOUR_MS, hour_of, system_now_ms
from deploy.settings import Settings
from projector.log.stream_config import ensure_stream
from server.app import Clients, create_app
from server.metrics import exposition
from tests.helpers import eventually, metric, serve
from tests.integration.workload import Truth, mixed_events, parse_text, post_path

Client = httpx.AsyncClient

pytestmark = pytest.mark.usefixtures("projector")


@pytest.fixture(params=["fast path", "litestar only"])
async def client(
    request: pytest.FixtureRequest, settings: Settings, nc: NATS, redis: Redis
) -> AsyncIterator[httpx.AsyncClient]:
    """Every contract test runs against both paths: the raw ASGI front and the Litestar routes alone."""
    await ensure_stream(nc, settings)
    config = settings.replace(http_fast_path=request.param == "fast path")
    async for http in serve(create_app(config, Clients(nc=nc, redis=redis))):
        yield http


async def hour_text(client: Client, ts: int) -> tuple[int, int, int]:
    response = await client.get(f"/analytics?timestamp={ts}")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/plain; charset=utf-8"
    assert response.text.endswith("\n")
    assert not response.text.endswith("\n\n")
    return parse_text(response.text)


async def stream_messages(nc: NATS, settings: Settings) -> int:
    return int((await nc.jetstream().stream_info(settings.stream_name)).state.messages)


async def test_seed_example_is_counted_in_the_first_hour_of_1970(client: Client) -> None:
    response = await client.post("/analytics?timestamp=123&user=kek&click")
    assert response.status_code == 204
    assert response.content == b""
    assert await eventually(lambda: hour_text(client, 0), lambda t: t == (1, 1, 0)) == (1, 1, 0)


async def test_mixed_workload_lands_each_event_in_its_own_hour(client: Client) -> None:
    now = system_now_ms()
    truth = Truth()
    for ts, user, kind in mixed_events(now, 400):
        assert (await client.post(post_path(ts, user, kind))).status_code == 204
        truth.add(ts, user, kind)
    assert len(truth.hours()) > 2
    for hour in truth.hours():
        users, clicks, impressions = truth.text(hour)
        got = await eventually(
            lambda h=hour: hour_text(client, h * HOUR_MS),  # type: ignore[misc]
            lambda t, c=clicks, i=impressions: t[1:] == (c, i),  # type: ignore[misc]
        )
        assert abs(got[0] - users) <= max(1, users * 0.03), (hour, got, users)


async def test_event_parameter_is_accepted_like_the_bare_flag(client: Client) -> None:
    ts = 5 * HOUR_MS
    assert (await client.post(f"/analytics?timestamp={ts}&user=a&event=impression")).status_code == 204
    assert (await client.post(f"/analytics?timestamp={ts}&user=b&event=click")).status_code == 204
    await eventually(lambda: hour_text(client, ts), lambda t: t == (2, 1, 1))


async def test_json_answer_carries_the_hour_bounds(client: Client) -> None:
    ts = 1_764_079_200_000 + 1234  # 2025-11-25T14:00:01.234Z
    await client.post(f"/analytics?timestamp={ts}&user=u&click")
    await eventually(lambda: hour_text(client, ts), lambda t: t == (1, 1, 0))
    response = await client.get(f"/analytics?timestamp={ts}", headers={"Accept": "application/json"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    assert response.json() == {
        "hour_start": "2025-11-25T14:00:00Z",
        "hour_end": "2025-11-25T15:00:00Z",
        "unique_users": 1,
        "clicks": 1,
        "impressions": 0,
    }


async def test_an_hour_nobody_wrote_to_answers_zeros(client: Client) -> None:
    assert await hour_text(client, 42 * HOUR_MS) == (0, 0, 0)


BAD_POSTS = [
    ("user=kek&click", "timestamp"),
    ("timestamp=abc&user=kek&click", "timestamp"),
    ("timestamp=1e12&user=kek&click", "timestamp"),
    ("timestamp=-5&user=kek&click", "timestamp"),
    ("timestamp=12.5&user=kek&click", "timestamp"),
    ("timestamp=18446744073709551616&user=kek&click", "timestamp"),
    ("timestamp={future}&user=kek&click", "timestamp"),
    ("timestamp={micros}&user=kek&click", "timestamp"),
    ("timestamp=1&click", "user"),
    ("timestamp=1&user=&click", "user"),
    ("timestamp=1&user=" + "x" * 257 + "&click", "user"),
    ("timestamp=1&user=a%01b&click", "user"),
    ("timestamp=1&user=%20%09%20&click", "user"),
    ("timestamp=1&user=kek", "event"),
    ("timestamp=1&user=kek&click&impression", "event"),
]


async def test_every_bad_post_is_a_400_naming_the_parameter_and_stores_nothing(
    client: Client, nc: NATS, settings: Settings
) -> None:
    await client.post("/analytics?timestamp=1&user=before&click")
    await eventually(lambda: hour_text(client, 1), lambda t: t == (1, 1, 0))
    before = await stream_messages(nc, settings)
    now = system_now_ms()
    for template, param in BAD_POSTS:
        query = template.format(future=now + 2 * 86_400_000, micros=now * 1000)
        response = await client.post(f"/analytics?{query}")
        assert response.status_code == 400, query
        assert response.text.startswith(f"{param}:"), (query, response.text)
        assert "Traceback" not in response.text
    assert await stream_messages(nc, settings) == before
    assert await hour_text(client, 1) == (1, 1, 0)


async def test_bad_idempotency_key_is_a_400(client: Client) -> None:
    response = await client.post(
        "/analytics?timestamp=1&user=u&click", headers=[(b"Idempotency-Key", "é".encode())]
    )
    assert response.status_code == 400
    assert response.text.startswith("Idempotency-Key:")


@pytest.mark.parametrize("query", ["", "timestamp=", "timestamp=-1", "timestamp=x", "timestamp=1.5"])
async def test_get_refuses_bad_timestamps_with_a_400(client: Client, query: str) -> None:
    response = await client.get(f"/analytics?{query}")
    assert response.status_code == 400
    assert response.text.startswith("timestamp:")


async def test_errors_are_json_when_json_is_asked_for(client: Client) -> None:
    response = await client.get("/analytics?timestamp=x", headers={"Accept": "application/json"})
    assert response.status_code == 400
    assert response.json()["parameter"] == "timestamp"


async def test_odd_methods_and_paths_get_a_4xx_never_a_5xx(client: Client) -> None:
    for method, path in [
        ("PUT", "/analytics?timestamp=1"),
        ("DELETE", "/analytics"),
        ("GET", "/nope"),
        ("POST", "/analytics?%zz"),
    ]:
        response = await client.request(method, path)
        assert 400 <= response.status_code < 500, (method, path, response.status_code)


@pytest.mark.usefixtures("projector")
async def test_health_and_readiness(client: Client) -> None:
    assert (await client.get("/healthz")).status_code == 200
    await eventually(lambda: client.get("/readyz"), lambda r: r.status_code == 200)
    ingest = await client.get("/readyz/ingest")
    assert (ingest.status_code, ingest.text) == (200, "ready\n")


def test_hour_helper_matches_contract() -> None:
    assert hour_of(HOUR_MS) == 1


async def test_get_carries_validators_and_answers_304_when_unchanged(client: Client) -> None:
    first = await client.get("/analytics?timestamp=3")
    assert first.headers["cache-control"] == "public, max-age=1"
    assert first.headers["vary"] == "Accept"
    etag = first.headers["etag"]
    again = await client.get("/analytics?timestamp=3", headers={"If-None-Match": etag})
    assert again.status_code == 304
    assert again.content == b""
    as_json = await client.get("/analytics?timestamp=3", headers={"Accept": "application/json"})
    assert as_json.headers["etag"] != etag


POSTED = 'hourglass_http_requests_total{method="POST",route="/analytics",status="204"}'
SERVER_COUNTERS = (POSTED, "hourglass_publish_batch_events_count", "hourglass_puback_seconds_count")


def samples(text: str, names: tuple[str, ...]) -> dict[str, float]:
    """The named samples (name with labels, as exposed) of a text exposition; 0 for one not there yet."""
    found = dict(line.rsplit(" ", 1) for line in text.splitlines() if line and not line.startswith("#"))
    return {name: float(found.get(name, 0)) for name in names}


async def test_metrics_count_requests_batches_and_projector_progress(client: Client) -> None:
    """Each counter moves by what this test did (the registries are process-wide: earlier tests' counts
    are the baseline, not a pass)."""
    server_before = samples(exposition()[0].decode(), SERVER_COUNTERS)  # what the admin port serves
    applied_before = metric("hourglass_projector_events_applied_total")  # the in-process projector's
    assert (await client.post("/analytics?timestamp=1&user=m&click")).status_code == 204
    await eventually(lambda: hour_text(client, 1), lambda t: t[1] >= 1)
    server_after = samples(exposition()[0].decode(), SERVER_COUNTERS)
    assert server_after[POSTED] == server_before[POSTED] + 1
    assert all(server_after[name] > server_before[name] for name in SERVER_COUNTERS), server_after
    assert metric("hourglass_projector_events_applied_total") == applied_before + 1
    projector = generate_latest(REGISTRY).decode()
    assert 'hourglass_projector_applied_seq{partition="' in projector
    assert 'hourglass_consumer_lag{partition="' in projector


async def test_unknown_parameters_are_ignored_and_the_event_still_counts(client: Client) -> None:
    ts = 6 * HOUR_MS
    response = await client.post(f"/analytics?timestamp={ts}&user=cb&click&_=1764079200123&utm_source=x")
    assert response.status_code == 204
    assert await eventually(lambda: hour_text(client, ts), lambda t: t == (1, 1, 0)) == (1, 1, 0)
    got = await client.get(f"/analytics?timestamp={ts}&_=99")
    assert parse_text(got.text) == (1, 1, 0)


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/readyz/ingest", "/analytics?timestamp=7"])
async def test_head_answers_like_get_without_a_body(client: Client, path: str) -> None:
    await eventually(lambda: client.get("/readyz"), lambda r: r.status_code == 200)
    got, head = await client.get(path), await client.head(path)
    assert head.status_code == got.status_code == 200
    assert head.content == b""
    assert head.headers["content-type"] == got.headers["content-type"]


async def test_options_and_405_name_every_method_of_analytics(client: Client) -> None:
    options = await client.options("/analytics")
    assert options.status_code == 204
    assert {m.strip() for m in options.headers["allow"].split(",")} == {"GET", "HEAD", "POST", "OPTIONS"}
    refused = await client.put("/analytics")
    assert refused.status_code == 405
    assert {m.strip() for m in refused.headers["allow"].split(",")} == {"GET", "HEAD", "POST", "OPTIONS"}


async def test_made_up_methods_share_one_metric_label(client: Client) -> None:
    for i in range(40):
        assert (await client.request(f"BREW{i}", "/analytics")).status_code == 405
    text = exposition()[0].decode()
    assert "BREW" not in text
    assert 'method="other",route="/analytics",status="405"' in text


async def test_dimensions_are_stored_with_the_event_and_count_in_every_total(
    client: Client, nc: NATS, settings: Settings
) -> None:
    ts = 9 * HOUR_MS + 7
    path = f"/analytics?timestamp={ts}&user=dim-a&click&site=example.com&campaign=spring-sale&creative=c12"
    assert (await client.post(path)).status_code == 204
    assert (await client.post(f"/analytics?timestamp={ts}&user=dim-b&impression")).status_code == 204
    # Every total counts both, as without dimensions.
    assert await eventually(lambda: hour_text(client, ts), lambda t: t == (2, 1, 1)) == (2, 1, 1)
    # The log holds the first with its dimensions, sorted by name, in a version 2 message.
    js = nc.jetstream()
    info = await js.stream_info(settings.stream_name)
    found = []
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        batch = schema.decode((await js.get_msg(settings.stream_name, seq)).data or b"")
        found += [(type(batch).__name__, e) for e in batch.events if e.ts == ts]
    assert sorted((version, e.user, e.dims) for version, e in found) == [
        ("BatchV1", "dim-b", ()),
        ("BatchV2", "dim-a", (("campaign", "spring-sale"), ("creative", "c12"), ("site", "example.com"))),
    ]


async def test_a_mistyped_dimension_is_a_400_naming_it_and_nothing_is_stored(
    client: Client, nc: NATS, settings: Settings
) -> None:
    await ensure_stream(nc, settings)
    before = await stream_messages(nc, settings)
    response = await client.post(f"/analytics?timestamp={HOUR_MS}&user=u&click&campain=spring")
    assert response.status_code == 400
    assert response.text.startswith("campain: is not a declared dimension; did you mean campaign?")
    bad = await client.post(f"/analytics?timestamp={HOUR_MS}&user=u&click&campaign=spring%20sale")
    assert bad.status_code == 400
    assert bad.text.startswith("campaign: must be 1-64 characters")
    assert await stream_messages(nc, settings) == before
