from __future__ import annotations

from collections import Counter

from hypothesis import given
from hypothesis import strategies as st

from contract.hours import hour_of
from contract.schema import Batch, Event, Kind
from projector.fold import Deltas, fold, merge

HOUR = 3_600_000
events = st.builds(
    Event,
    ts=st.integers(min_value=0, max_value=5 * HOUR),
    user=st.sampled_from(["a", "b", "c", "d", "e"]),
    kind=st.sampled_from(Kind),
)
messages = st.lists(st.lists(events, min_size=0, max_size=5), max_size=12).map(
    lambda batches: [(seq, Batch(events=tuple(evs))) for seq, evs in enumerate(batches, start=1)]
)


def as_plain(d: Deltas) -> dict[int, tuple[frozenset[str], int, int]]:
    return {h: (frozenset(v.users), v.clicks, v.impressions) for h, v in d.hours.items()}


@given(messages, st.integers(min_value=0, max_value=12))
def test_fold_of_a_concatenation_is_the_merge_of_the_folds(msgs: list[tuple[int, Batch]], cut: int) -> None:
    whole = fold(msgs)
    parts = merge(fold(msgs[:cut]), fold(msgs[cut:]))
    assert as_plain(whole) == as_plain(parts)
    assert whole.last_seq == parts.last_seq
    assert whole.events == parts.events


@given(messages)
def test_fold_counts_every_event_in_its_own_hour(msgs: list[tuple[int, Batch]]) -> None:
    clicks: Counter[int] = Counter()
    impressions: Counter[int] = Counter()
    users: dict[int, set[str]] = {}
    for _, batch in msgs:
        for e in batch.events:
            (clicks if e.kind is Kind.CLICK else impressions)[hour_of(e.ts)] += 1
            users.setdefault(hour_of(e.ts), set()).add(e.user)
    expected = {h: (frozenset(u), clicks[h], impressions[h]) for h, u in users.items()}
    assert as_plain(fold(msgs)) == expected


@given(messages, st.integers(min_value=0, max_value=12))
def test_messages_at_or_below_the_watermark_are_skipped(msgs: list[tuple[int, Batch]], wm: int) -> None:
    assert as_plain(fold(msgs, after=wm)) == as_plain(fold([m for m in msgs if m[0] > wm]))


def test_redelivery_after_apply_folds_to_nothing() -> None:
    msgs = [(1, Batch(events=(Event(1, "a", Kind.CLICK),)))]
    assert not fold(msgs, after=1)
