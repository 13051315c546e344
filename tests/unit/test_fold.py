from __future__ import annotations

from collections import Counter

from hypothesis import given
from hypothesis import strategies as st

from contract.buckets import quarter_of
from contract.hours import hour_of
from contract.schema import Event, Kind, batch_of
from projector.fold.deltas import Deltas, Keyed
from tests.reference_fold import Message, fold, merge

HOUR = 3_600_000
events = st.builds(
    Event,
    ts=st.integers(min_value=0, max_value=5 * HOUR),
    user=st.sampled_from(["a", "b", "c", "d", "e"]),
    kind=st.sampled_from(Kind),
    key=st.none() | st.sampled_from(["k1", "k2", "k3"]),
)
messages = st.lists(st.lists(events, min_size=0, max_size=5), max_size=12).map(
    lambda batches: [
        Message(seq, batch_of(events=tuple(evs)), stream_ms=seq * 1000) for seq, evs in enumerate(batches, 1)
    ]
)


Plain = dict[tuple[int, int], tuple[frozenset[str], int, int]]


def as_plain(d: Deltas) -> tuple[Plain, list[Keyed]]:
    """Per (hour, quarter-hour): users, clicks, impressions; then the keyed events."""
    quarters = {
        (h, q): (frozenset(cell.users), cell.clicks, cell.impressions)
        for h, v in d.hours.items()
        for q, cell in enumerate(v.quarters)
    }
    return quarters, d.keyed


@given(messages, st.integers(min_value=0, max_value=12))
def test_fold_of_a_concatenation_is_the_merge_of_the_folds(msgs: list[Message], cut: int) -> None:
    whole = fold(msgs)
    parts = merge(fold(msgs[:cut]), fold(msgs[cut:]))
    assert as_plain(whole) == as_plain(parts)
    assert whole.last_seq == parts.last_seq
    assert whole.events == parts.events


@given(messages)
def test_fold_counts_every_unkeyed_event_in_its_own_quarter_hour(msgs: list[Message]) -> None:
    clicks: Counter[tuple[int, int]] = Counter()
    impressions: Counter[tuple[int, int]] = Counter()
    users: dict[tuple[int, int], set[str]] = {}
    keyed = []
    for _, batch, stream_ms in msgs:
        for e in batch.events:
            hour, quarter = hour_of(e.ts), quarter_of(e.ts)
            for q in range(4):  # an hour with any event has all four quarters, empty or not
                users.setdefault((hour, q), set())
            if e.key is not None:
                keyed.append(Keyed(e.key, e.user, stream_ms, hour, e.kind, quarter))
            else:
                users[(hour, quarter)].add(e.user)
                (clicks if e.kind is Kind.CLICK else impressions)[(hour, quarter)] += 1
    expected = {at: (frozenset(u), clicks[at], impressions[at]) for at, u in users.items()}
    assert as_plain(fold(msgs)) == (expected, keyed)


@given(messages)
def test_an_hour_is_the_union_of_its_quarter_hours(msgs: list[Message]) -> None:
    for hour, delta in fold(msgs).hours.items():
        unkeyed = [e for m in msgs for e in m.batch.events if e.key is None and hour_of(e.ts) == hour]
        assert delta.users == {e.user for e in unkeyed}
        assert delta.clicks == sum(e.kind is Kind.CLICK for e in unkeyed)
        assert delta.impressions == sum(e.kind is Kind.IMPRESSION for e in unkeyed)


@given(messages, st.integers(min_value=0, max_value=12))
def test_messages_at_or_below_the_watermark_are_skipped(msgs: list[Message], wm: int) -> None:
    assert as_plain(fold(msgs, after=wm)) == as_plain(fold([m for m in msgs if m.seq > wm]))


def test_redelivery_after_apply_folds_to_nothing() -> None:
    msgs = [Message(1, batch_of(events=(Event(1, "a", Kind.CLICK),)))]
    assert not fold(msgs, after=1)


def test_keyed_events_are_left_whole_to_the_apply_user_included() -> None:
    deltas = fold([Message(3, batch_of(events=(Event(5, "u", Kind.CLICK, key="k"),)), stream_ms=77)])
    assert deltas.hours[0].users == set()
    assert deltas.hours[0].clicks == 0
    assert deltas.keyed == [Keyed("k", "u", 77, 0, Kind.CLICK, 0)]
    assert deltas.keyed[0].member == "u\nk"
    assert deltas.last_ms == 77


def test_late_events_are_counted_by_the_age_of_their_hour() -> None:
    from prometheus_client import REGISTRY

    from projector.metrics import count_late

    def seen(age: str) -> float:
        return REGISTRY.get_sample_value("hourglass_projector_late_events_total", {"age": age}) or 0.0

    before = {age: seen(age) for age in ("1h", "1d", "older")}
    now_hour = 1000
    msgs = [
        Message(1, batch_of(events=(Event(now_hour * HOUR, "a", Kind.CLICK),))),  # the current hour: not late
        Message(2, batch_of(events=(Event((now_hour - 1) * HOUR, "b", Kind.CLICK, key="k"),))),
        Message(3, batch_of(events=(Event((now_hour - 5) * HOUR, "c", Kind.IMPRESSION),) * 2)),
        Message(4, batch_of(events=(Event(0, "d", Kind.CLICK),))),
    ]
    count_late(fold(msgs), now_hour)
    assert {age: seen(age) - before[age] for age in before} == {"1h": 1, "1d": 2, "older": 1}
