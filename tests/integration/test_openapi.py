"""The OpenAPI document at /schema, and schemathesis against the real server: never a 5xx, every answer
as documented."""

from __future__ import annotations

import itertools
import re

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import Case, GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from deploy.settings import Settings
from tests.integration.st_hooks import mend

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


OPERATIONS = {
    "GET /analytics",
    "HEAD /analytics",
    "POST /analytics",
    "POST /analytics/batch",
    "GET /analytics/range",
    "HEAD /analytics/range",
    "GET /analytics/breakdown",
    "HEAD /analytics/breakdown",
}


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_every_answer_matches_the_document_and_none_is_a_5xx(
    http_server: tuple[str, Settings], mode: GenerationMode
) -> None:
    base, _ = http_server
    api = schemathesis.openapi.from_url(f"{base}/schema/openapi.json")
    operations = [result.ok() for result in api.get_all_operations()]  # type: ignore[union-attr]
    assert {op.label for op in operations} == OPERATIONS
    document = httpx.get(f"{base}/schema").json()
    # Schemathesis validates JSON bodies against the document; text ones are checked here.
    text_patterns = {
        (path, media): document["paths"][path]["get"]["responses"]["200"]["content"][media]["schema"][
            "pattern"
        ]
        for path, media in (
            ("/analytics", "text/plain"),
            ("/analytics/range", "text/csv"),
            ("/analytics/breakdown", "text/csv"),
        )
    }
    # Ranges kept short: a long one can outlast the test server's Redis timeout (a 503).
    cases = st.one_of(*(op.as_strategy(generation_mode=mode).map(mend) for op in operations))

    @given(cases)
    @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
    def check(case: Case) -> None:  # type: ignore[type-arg]
        response = case.call_and_validate(base_url=base, checks=CHECKS)
        if case.method == "GET" and response.status_code == 200:
            media = response.headers["content-type"][0].partition(";")[0]
            pattern = text_patterns.get((case.path, media))
            if pattern is not None:
                assert re.fullmatch(pattern, response.text), response.text

    check()


def test_the_document_describes_each_operation_exactly(http_server: tuple[str, Settings]) -> None:
    base, _ = http_server
    document = httpx.get(f"{base}/schema").json()
    assert set(document["paths"]) == {
        "/analytics",
        "/analytics/batch",
        "/analytics/range",
        "/analytics/breakdown",
    }
    batch = document["paths"]["/analytics/batch"]["post"]
    assert set(batch["requestBody"]["content"]) == {"application/x-ndjson", "text/csv"}
    assert set(batch["responses"]) == {"200", "400", "413", "415", "429", "503"}
    post = document["paths"]["/analytics"]["post"]
    params = {p["name"]: p for p in post["parameters"]}
    dimensions = {"campaign", "creative", "site"}
    assert set(params) == {"timestamp", "user", "event", "Idempotency-Key", *dimensions}
    assert not any(params[name]["required"] for name in dimensions)
    assert params["campaign"]["schema"]["pattern"] == "^[A-Za-z0-9._:/-]{1,64}$"
    assert params["event"]["required"]
    assert params["event"]["schema"]["enum"] == ["click", "impression"]
    assert "&click" in post["description"]  # the shorthand is prose, not a parameter
    assert set(post["responses"]) == {"204", "400", "429", "503"}
    get = document["paths"]["/analytics"]["get"]
    assert [p["name"] for p in get["parameters"]] == [
        "timestamp",
        *sorted(dimensions, key=["campaign", "creative", "site"].index),
    ]
    assert set(get["responses"]) == {"200", "304", "400", "401", "409", "503"}
    breakdown = document["paths"]["/analytics/breakdown"]["get"]
    assert [(p["name"], p["required"]) for p in breakdown["parameters"]] == [
        ("by", True),
        ("timestamp", False),
        ("from", False),
        ("to", False),
        ("tz", False),
        ("sort", False),
        ("top", False),
        *((name, False) for name in ("campaign", "creative", "site")),
    ]
    assert breakdown["parameters"][0]["schema"]["enum"] == ["campaign", "creative", "site"]
    assert breakdown["parameters"][6]["schema"]["maximum"] == 1000
    assert set(breakdown["responses"]) == {"200", "400", "401", "409", "503"}
    ranges = document["paths"]["/analytics/range"]["get"]
    assert [(p["name"], p["required"]) for p in ranges["parameters"]] == [
        ("from", True),
        ("to", True),
        ("granularity", False),
        ("tz", False),
        *((name, False) for name in ("campaign", "creative", "site")),
    ]
    assert "Asia/Kolkata" in ranges["parameters"][3]["schema"]["enum"]
    assert set(ranges["responses"]) == {"200", "400", "401", "409", "503"}
    assert set(ranges["responses"]["200"]["content"]) == {"text/csv", "application/json"}


def test_the_range_path_and_the_old_range_query_answer_the_same(http_server: tuple[str, Settings]) -> None:
    base, _ = http_server
    empty = "from=10800000&to=0&granularity=day"  # to before from: no rows, a zero total
    for query, accept in itertools.product(
        ["from=0&to=10800000&granularity=hour", empty], ["text/csv", "application/json"]
    ):
        documented = httpx.get(f"{base}/analytics/range?{query}", headers={"accept": accept})
        old = httpx.get(f"{base}/analytics?{query}", headers={"accept": accept})
        assert documented.status_code == old.status_code == 200
        assert documented.content == old.content
        assert documented.headers["content-type"] == old.headers["content-type"]
    assert (
        httpx.get(f"{base}/analytics/range?{empty}").text
        == "day,unique_users,clicks,impressions\ntotal,0,0,0\n"
    )
    refused = httpx.get(f"{base}/analytics/range?from=0&to={8785 * 3_600_000}")
    assert refused.status_code == 400
    assert refused.text.startswith("to: ")
