from __future__ import annotations

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from contract import schema
from contract.schema import Event, Kind, batch_of

dims = st.dictionaries(
    st.sampled_from(["campaign", "creative", "site"]), st.from_regex(schema.DIMENSION_VALUE, fullmatch=True)
).map(lambda found: tuple(sorted(found.items())))
events = st.builds(
    Event,
    ts=st.integers(min_value=0, max_value=2**62),
    user=st.text(min_size=1, max_size=20),
    kind=st.sampled_from(Kind),
    key=st.none() | st.text(max_size=10),
    dims=st.just(()) | dims,
)


@given(st.lists(events, max_size=20))
def test_batches_round_trip(evs: list[Event]) -> None:
    batch = batch_of(events=tuple(evs))
    assert schema.decode(schema.encode(batch)) == batch


def test_version_1_messages_written_today_still_decode() -> None:
    # Golden bytes: a v1 message as it sits in streams now. Never change this test's input.
    old = b'{"v":1,"events":[[123,"kek","click",null],[5,"u","impression","key-1"]]}'
    assert schema.decode(old) == batch_of(
        events=(Event(123, "kek", Kind.CLICK), Event(5, "u", Kind.IMPRESSION, "key-1"))
    )


def test_a_batch_without_dimensions_is_written_as_version_1_always_was() -> None:
    # A reader that knows only version 1 refuses a fifth field: these bytes must never change.
    batch = batch_of(events=(Event(123, "kek", Kind.CLICK), Event(5, "u", Kind.IMPRESSION, "key-1")))
    assert schema.encode(batch) == b'{"v":1,"events":[[123,"kek","click",null],[5,"u","impression","key-1"]]}'
    assert schema.encode_event(Event(1, "a", Kind.CLICK)) == b'[1,"a","click",null]'


def test_v1_without_the_optional_key_decodes() -> None:
    assert schema.decode(b'{"v":1,"events":[[1,"a","click"]]}').events[0].key is None


@pytest.mark.parametrize(
    "payload",
    [b"", b"{}", b'{"v":"x"}', b'{"v":1,"events":[[1,"a","purchase"]]}', b"\xff", b"[1]"],
)
def test_unknown_payloads_are_refused(payload: bytes) -> None:
    with pytest.raises(msgspec.DecodeError):
        schema.decode(payload)


@given(st.lists(events, max_size=20))
def test_a_batch_is_version_2_exactly_when_an_event_carries_dimensions(evs: list[Event]) -> None:
    batch = batch_of(events=tuple(evs))
    assert isinstance(batch, schema.BatchV2) == any(e.dims for e in evs)
    assert schema.encode(batch).startswith(b'{"v":2' if any(e.dims for e in evs) else b'{"v":1')


def test_version_2_messages_decode_with_their_dimensions() -> None:
    # Golden bytes: a v2 message as ingest writes it. Never change this test's input.
    payload = (
        b'{"v":2,"events":[[1,"a","click",null,[["campaign","spring"],["site","x.com"]]],'
        b'[2,"b","click",null]]}'
    )
    first, second = schema.decode(payload).events
    assert first.dims == (("campaign", "spring"), ("site", "x.com"))
    assert second.dims == ()


@pytest.mark.parametrize(
    ("dims", "problem"),
    [
        ((("site", "a"), ("campaign", "b")), "dimensions must be sorted by name, each once"),
        ((("campaign", "a"), ("campaign", "b")), "dimensions must be sorted by name, each once"),
        ((("Campaign", "a"),), "dimension name 'Campaign' is not"),
        ((("campaign", "a b"),), "campaign: must be 1-64 characters"),
        ((("campaign", ""),), "campaign: must be 1-64 characters"),
    ],
)
def test_dimensions_that_ingest_would_refuse_are_named(dims: schema.Dimensions, problem: str) -> None:
    assert (schema.dims_problem(dims) or "").startswith(problem)


@pytest.mark.parametrize("payload", [b'{"v":99,"events":[]}', b'{"v":3}', b'{"v":0,"x":1}'])
def test_a_batch_of_an_unknown_version_is_told_apart_from_garbage(payload: bytes) -> None:
    with pytest.raises(schema.UnknownVersion) as caught:
        schema.decode(payload)
    assert str(caught.value).startswith("unknown schema version")
