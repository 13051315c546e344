"""Replay == live: folding and applying a log in any chunking gives the same projections as all at once.

Runs on the in-memory projections, which `tests/integration/test_seams.py` holds to the real Redis script.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from contract.schema import Event, Kind, batch_of
from tests.fakes import MemoryProjections
from tests.reference_fold import Message, fold

HOUR = 3_600_000
WINDOW = 50

events = st.builds(
    Event,
    ts=st.integers(min_value=0, max_value=3 * HOUR - 1),
    user=st.sampled_from(["a", "b", "c"]),
    kind=st.sampled_from(Kind),
    key=st.none() | st.sampled_from(["k1", "k2"]),
)
logs = st.lists(
    st.tuples(st.lists(events, max_size=4), st.integers(min_value=0, max_value=40)), max_size=14
).map(
    lambda items: [
        Message(seq, batch_of(events=tuple(evs)), stream_ms=sum(gap for _, gap in items[:seq]))
        for seq, (evs, _) in enumerate(items, start=1)
    ]
)


async def project(messages: list[Message], cuts: list[int]) -> MemoryProjections:
    projections = MemoryProjections(window_ms=WINDOW)
    watermark, start = 0, 0
    for end in [*sorted(set(cuts)), len(messages)]:
        deltas = fold(messages[start:end], after=watermark)
        if deltas:
            watermark = (await projections.apply(1, 0, watermark, deltas)).watermark
        start = end
    return projections


@given(logs, st.lists(st.integers(min_value=0, max_value=14), max_size=6))
async def test_any_chunking_of_the_log_projects_the_same_as_one_replay(
    messages: list[Message], cuts: list[int]
) -> None:
    live = await project(messages, [c for c in cuts if c <= len(messages)])
    replayed = await project(messages, [])
    assert [live.totals(h) for h in range(3)] == [replayed.totals(h) for h in range(3)]


@given(logs)
async def test_a_redelivered_chunk_changes_nothing(messages: list[Message]) -> None:
    once = await project(messages, [])
    twice = MemoryProjections(window_ms=WINDOW)
    deltas = fold(messages)
    if deltas:
        await twice.apply(1, 0, 0, deltas)
        again = await twice.apply(1, 0, 0, deltas)
        assert again.watermark == deltas.last_seq
    assert [once.totals(h) for h in range(3)] == [twice.totals(h) for h in range(3)]
