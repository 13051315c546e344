"""The OpenAPI document at /schema, and schemathesis against the real server: never a 5xx, every answer
as documented."""

from __future__ import annotations

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

from contract.settings import Settings

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_every_answer_matches_the_document_and_none_is_a_5xx(
    http_server: tuple[str, Settings], mode: GenerationMode
) -> None:
    base, _ = http_server
    api = schemathesis.openapi.from_url(f"{base}/schema/openapi.json")
    operations = [result.ok() for result in api.get_all_operations()]  # type: ignore[union-attr]
    assert {op.label for op in operations} == {"GET /analytics", "HEAD /analytics", "POST /analytics"}
    document = httpx.get(f"{base}/schema").json()
    text_pattern = document["paths"]["/analytics"]["get"]["responses"]["200"]["content"]["text/plain"][
        "schema"
    ]["pattern"]
    cases = st.one_of(*(op.as_strategy(generation_mode=mode) for op in operations))

    @given(cases)
    @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
    def check(case: Case) -> None:  # type: ignore[type-arg]
        response = case.call_and_validate(base_url=base, checks=CHECKS)
        # Schemathesis validates JSON bodies against the document; text ones are checked here.
        if (
            case.method == "GET"
            and response.status_code == 200
            and "text/plain" in response.headers["content-type"][0]
        ):
            assert re.fullmatch(text_pattern, response.text), response.text

    check()


def test_the_document_describes_both_endpoints_and_the_flags(http_server: tuple[str, Settings]) -> None:
    base, _ = http_server
    document = httpx.get(f"{base}/schema").json()
    post = document["paths"]["/analytics"]["post"]
    names = {p["name"] for p in post["parameters"]}
    assert {"timestamp", "user", "click", "impression", "event", "Idempotency-Key"} <= names
    flags = {p["name"]: p for p in post["parameters"] if p["name"] in ("click", "impression")}
    assert all(p["allowEmptyValue"] for p in flags.values())
    assert set(post["responses"]) == {"204", "400", "503"}
    get = document["paths"]["/analytics"]["get"]
    assert [p["name"] for p in get["parameters"]] == ["timestamp", "from", "to", "granularity", "Accept"]
    assert set(get["responses"]) == {"200", "304", "400", "503"}
    assert set(document["paths"]) == {"/analytics"}
