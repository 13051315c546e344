from __future__ import annotations

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from contract import schema
from contract.schema import Batch, Event, Kind

events = st.builds(
    Event,
    ts=st.integers(min_value=0, max_value=2**62),
    user=st.text(min_size=1, max_size=20),
    kind=st.sampled_from(Kind),
    key=st.none() | st.text(max_size=10),
)


@given(st.lists(events, max_size=20))
def test_batches_round_trip(evs: list[Event]) -> None:
    batch = Batch(events=tuple(evs))
    assert schema.decode(schema.encode(batch)) == batch


def test_version_1_messages_written_today_still_decode() -> None:
    # Golden bytes: a v1 message as it sits in streams now. Never change this test's input.
    old = b'{"v":1,"events":[[123,"kek","click",null],[5,"u","impression","key-1"]]}'
    assert schema.decode(old) == Batch(
        events=(Event(123, "kek", Kind.CLICK), Event(5, "u", Kind.IMPRESSION, "key-1"))
    )


def test_v1_without_the_optional_key_decodes() -> None:
    assert schema.decode(b'{"v":1,"events":[[1,"a","click"]]}').events[0].key is None


@pytest.mark.parametrize(
    "payload",
    [b"", b"{}", b'{"v":"x"}', b'{"v":1,"events":[[1,"a","purchase"]]}', b"\xff", b"[1]"],
)
def test_unknown_payloads_are_refused(payload: bytes) -> None:
    with pytest.raises(msgspec.DecodeError):
        schema.decode(payload)


@pytest.mark.parametrize("payload", [b'{"v":99,"events":[]}', b'{"v":2}', b'{"v":0,"x":1}'])
def test_a_batch_of_an_unknown_version_is_told_apart_from_garbage(payload: bytes) -> None:
    with pytest.raises(schema.UnknownVersion) as caught:
        schema.decode(payload)
    assert str(caught.value).startswith("unknown schema version")
