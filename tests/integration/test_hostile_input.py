"""Random methods, queries and headers against the real HTTP server: never a 5xx, never a stray event."""

from __future__ import annotations

import asyncio

import httpx
import nats
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deploy.settings import Settings

KNOWN = ["timestamp", "user", "click", "impression", "event", "_"]
pieces = st.sampled_from(
    [
        "%",
        "%2",
        "%zz",
        "%00",
        "%C3%A9",
        "%FF",
        "+",
        "&",
        "=",
        "==",
        ";",
        "-",
        ".",
        "e",
        "1",
        "0",
        "9" * 25,
        "é",
    ]
)
values = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.text(alphabet=st.characters(codec="utf-8"), max_size=30),
    st.lists(pieces, max_size=6).map("".join),
    st.just(""),
)
pairs = st.tuples(st.sampled_from(KNOWN) | st.text(max_size=8), st.none() | values)
queries = st.lists(pairs, max_size=8).map(lambda ps: "&".join(k if v is None else f"{k}={v}" for k, v in ps))
near_valid = st.builds(
    lambda ts, user, kind, extra: f"timestamp={ts}&user={user}&{kind}{extra}",
    st.integers(min_value=-5, max_value=2_000_000_000_000).map(str) | values,
    st.text(alphabet=st.characters(codec="ascii", categories=["L", "N"]), min_size=1, max_size=10) | values,
    st.sampled_from(["click", "impression", "event=click", "event=impression", "click&impression", "clack"]),
    st.sampled_from(["", "&_=1", "&user=again", "&timestamp=1"]),
)
methods = st.sampled_from(["POST"] * 6 + ["GET"] * 4 + ["PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"])
header_values = st.text(
    alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=20
) | st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0xFF), max_size=140)
headers = st.dictionaries(st.sampled_from(["Idempotency-Key", "Accept", "Content-Type"]), header_values)


def stream_messages(s: Settings) -> int:
    async def count() -> int:
        nc = await nats.connect(s.nats_url)
        try:
            return int((await nc.jetstream().stream_info(s.stream_name)).state.messages)
        finally:
            await nc.close()

    return asyncio.run(count())


def test_random_requests_never_get_a_5xx_and_refused_ones_store_nothing(
    http_server: tuple[str, Settings],
) -> None:
    base, s = http_server
    before = stream_messages(s)
    stored = 0
    seen: dict[int, int] = {}

    with httpx.Client(base_url=base, timeout=10) as client:

        @settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
        @given(
            method=methods,
            path=st.sampled_from(["/analytics"] * 6 + ["/healthz", "/readyz", "/x", "/analytics/"]),
            query=near_valid | queries,
            hdrs=headers,
        )
        def check(method: str, path: str, query: str, hdrs: dict[str, str]) -> None:
            nonlocal stored
            raw = (path + ("?" + query if query else "")).encode()
            if any(b <= 0x20 or b >= 0x7F for b in raw):
                raw = b"".join(bytes([b]) if 0x20 < b < 0x7F else b"%%%02X" % b for b in raw)
            try:
                response = client.request(
                    method,
                    httpx.URL(base).copy_with(raw_path=raw),
                    headers=[(k.encode(), v.encode("latin-1")) for k, v in hdrs.items()],
                )
            except (httpx.LocalProtocolError, httpx.InvalidURL):
                return  # the client itself refused to send it
            # No projector runs here, so /readyz rightly says 503; nothing else may.
            not_ready = path == "/readyz" and response.status_code == 503
            assert response.status_code < 500 or not_ready, (
                method,
                raw,
                hdrs,
                response.status_code,
                response.text,
            )
            assert "Traceback" not in response.text
            seen[response.status_code] = seen.get(response.status_code, 0) + 1
            if method == "POST" and response.status_code == 204:
                stored += 1

        check()

    print(f"\nhostile input: statuses {sorted(seen.items())}, {stored} stored")
    assert stream_messages(s) == before + stored
