"""The audit's pure core: a recount equals a plain count of the same events, and the comparison finds
exactly what was changed (a counter, a register) and nothing else."""

from __future__ import annotations

import dataclasses

from hypothesis import given
from hypothesis import strategies as st

from contract import hll, schema
from contract.buckets import quarter_of, quarter_token
from contract.hours import HOUR_MS, partition_of, subject
from contract.schema import Event, Kind, batch_of
from projector.audit.verdict import (
    EMPTY,
    Counted,
    DayAudit,
    HourAudit,
    Verdict,
    axes_of,
    check_day,
    compare,
    recount,
    union,
)
from projector.fold.digest import digest

PARTS = 2
HOUR = 490_000
PREFIX = "analytics.events"
WINDOW = 600_000
USERS = ["a", "b", "c", "dd", "e", "f"]

events = st.builds(
    Event,
    ts=st.integers(HOUR * HOUR_MS, (HOUR + 1) * HOUR_MS - 1),
    user=st.sampled_from(USERS),
    kind=st.sampled_from(Kind),
    key=st.none() | st.sampled_from(["k1", "k2"]),
)
runs = st.lists(st.tuples(st.lists(events, min_size=1, max_size=5), st.integers(0, 1_500_000)), max_size=12)


def messages(
    run: list[tuple[list[Event], int]], partition: int
) -> tuple[list[str], list[bytes], list[int], list[int]]:
    """The run's events of `partition`, one message per batch, stamps rising by the given gaps."""
    subjects, payloads, seqs, stamps = [], [], [], []
    now = 1_000_000
    for i, (batch, gap) in enumerate(run):
        now += gap
        mine = tuple(e for e in batch if partition_of(e.user, PARTS) == partition)
        if mine:
            subjects.append(subject(PREFIX, HOUR, partition))
            payloads.append(schema.encode(batch_of(events=mine)))
            seqs.append(i + 1)
            stamps.append(now)
    return subjects, payloads, seqs, stamps


def plainly(run: list[tuple[list[Event], int]], partition: int, quarter: int | None = None) -> Counted:
    """The definition: every unkeyed event counts; a keyed one only if its user has not had the key
    counted within the window, on stream time; with `quarter`, only the counted events whose timestamp
    is in that quarter-hour of the hour."""
    users: set[str] = set()
    clicks = impressions = 0
    last: dict[tuple[str, str], int] = {}
    now = 1_000_000
    for batch, gap in run:
        now += gap
        for e in batch:
            if partition_of(e.user, PARTS) != partition:
                continue
            if e.key is not None:
                seen = last.get((e.user, e.key))
                if seen is not None and now - seen <= WINDOW:
                    continue
                last[e.user, e.key] = now
            if quarter is not None and quarter_of(e.ts) != quarter:
                continue
            users.add(e.user)
            clicks += e.kind is Kind.CLICK
            impressions += e.kind is Kind.IMPRESSION
    return Counted(clicks, impressions, hll.sketch(users))


def recounted(run: list[tuple[list[Event], int]], partition: int) -> Counted | None:
    return recount(*messages(run, partition), hour=HOUR, prefix=PREFIX, partitions=PARTS, window_ms=WINDOW)


@given(run=runs, partition=st.integers(0, PARTS - 1))
def test_a_recount_is_the_plain_count_duplicate_keys_included(
    run: list[tuple[list[Event], int]], partition: int
) -> None:
    assert recounted(run, partition) == plainly(run, partition)


@given(run=runs, partition=st.integers(0, PARTS - 1))
def test_a_recount_compared_with_itself_is_ok(run: list[tuple[list[Event], int]], partition: int) -> None:
    counted = recounted(run, partition)
    assert counted is not None
    found = compare(partition, counted, counted, "redis")
    assert found.verdict is Verdict.OK
    assert found.differs == ()


@given(
    run=runs,
    clicks=st.integers(-3, 3),
    impressions=st.integers(-3, 3),
    register=st.none() | st.integers(0, hll.REGISTERS - 1),
)
def test_the_comparison_names_exactly_what_was_changed(
    run: list[tuple[list[Event], int]], clicks: int, impressions: int, register: int | None
) -> None:
    counted = recounted(run, 0)
    assert counted is not None
    regs = bytearray(counted.registers)
    if register is not None:
        regs[register] = (regs[register] + 1) % 52
    served = Counted(counted.clicks + clicks, counted.impressions + impressions, bytes(regs))
    found = compare(0, counted, served, "redis")
    changed = {"clicks"} if clicks else set()
    changed |= {"impressions"} if impressions else set()
    changed |= {"uniques"} if register is not None else set()
    assert {d.split(":")[0].split()[1] for d in found.differs} == changed
    assert (found.verdict is Verdict.MISMATCH) == bool(changed)


def test_a_missing_key_is_served_as_empty_and_found_wanting() -> None:
    counted = Counted(2, 1, hll.sketch(["a", "b"]))
    audit = HourAudit(HOUR, (compare(0, counted, EMPTY, "redis"), compare(1, EMPTY, EMPTY, "redis")))
    assert audit.verdict is Verdict.MISMATCH
    assert audit.totals("log") == (2, 1, 2)
    assert audit.totals("served") == (0, 0, 0)
    line = audit.line()
    assert "  mismatch" in line
    assert "p0 clicks: log 2, served 0" in line
    assert "p1" not in line


def test_an_unknown_version_is_not_recounted() -> None:
    found = recount(
        [subject(PREFIX, HOUR, 0)],
        [b'{"v":99,"events":[]}'],
        [1],
        [1],
        hour=HOUR,
        prefix=PREFIX,
        partitions=PARTS,
        window_ms=WINDOW,
    )
    assert found is None


def test_a_pending_hour_says_so_and_is_no_mismatch() -> None:
    audit = HourAudit(HOUR, (), why="p1: stream seq 9 is past watermark 7", pending=True)
    assert audit.verdict is Verdict.PENDING
    assert "not yet applied: p1" in audit.line()


def recounted_quarters(run: list[tuple[list[Event], int]], partition: int) -> Counted | None:
    return recount(
        *messages(run, partition), hour=HOUR, prefix=PREFIX, partitions=PARTS, window_ms=WINDOW, quarters=True
    )


@given(run=runs, partition=st.integers(0, PARTS - 1))
def test_each_quarter_recount_is_the_plain_count_of_its_events_keys_decided_across_quarters(
    run: list[tuple[list[Event], int]], partition: int
) -> None:
    counted = recounted_quarters(run, partition)
    assert counted is not None
    assert dataclasses.replace(counted, quarters=()) == plainly(run, partition)
    assert counted.quarters == tuple(plainly(run, partition, q) for q in range(4))
    assert sum(q.clicks for q in counted.quarters) == counted.clicks
    assert sum(q.impressions for q in counted.quarters) == counted.impressions
    assert hll.merge(q.registers for q in counted.quarters) == counted.registers


def test_a_key_retried_in_a_later_quarter_counts_in_the_first_quarter_only() -> None:
    first, retry = HOUR * HOUR_MS + 60_000, HOUR * HOUR_MS + 40 * 60_000
    user = next(u for u in USERS if partition_of(u, PARTS) == 0)
    run = [([Event(first, user, Kind.CLICK, "k1")], 0), ([Event(retry, user, Kind.CLICK, "k1")], 1000)]
    counted = recounted_quarters(run, 0)
    assert counted is not None
    assert [(q.clicks, q.uniques) for q in counted.quarters] == [(1, 1), (0, 0), (0, 0), (0, 0)]


@given(run=runs, quarter=st.integers(0, 3), clicks=st.integers(1, 3))
def test_a_damaged_quarter_is_named_and_makes_the_hour_mismatched(
    run: list[tuple[list[Event], int]], quarter: int, clicks: int
) -> None:
    counted = recounted_quarters(run, 1)
    assert counted is not None
    damaged = list(counted.quarters)
    damaged[quarter] = dataclasses.replace(damaged[quarter], clicks=damaged[quarter].clicks + clicks)
    served = dataclasses.replace(counted, quarters=tuple(damaged))
    found = compare(1, counted, served, "redis", HOUR)
    assert found.verdict is Verdict.MISMATCH
    want = counted.quarters[quarter].clicks
    assert found.differs == (
        f"p1 quarter {quarter_token(HOUR, quarter)} clicks: log {want}, served {want + clicks}",
    )
    assert f"quarter {quarter_token(HOUR, quarter)} clicks" in HourAudit(HOUR, (found,)).line()
    assert compare(1, counted, counted, "redis", HOUR).verdict is Verdict.OK


def test_a_stray_user_in_a_quarter_is_named_by_its_registers() -> None:
    log = Counted(1, 0, hll.sketch(["a"]), (Counted(1, 0, hll.sketch(["a"])), EMPTY, EMPTY, EMPTY))
    served = dataclasses.replace(
        log, quarters=(log.quarters[0], EMPTY, Counted(0, 0, hll.sketch(["x"])), EMPTY)
    )
    found = compare(0, log, served, "snapshot", HOUR)
    assert [d.split(":")[0] for d in found.differs] == [f"p0 quarter {quarter_token(HOUR, 2)} uniques"]


def test_quarters_are_not_compared_when_the_served_side_has_none() -> None:
    """A generation from before quarter-hours serves none: its hours are compared as before."""
    log = Counted(1, 0, hll.sketch(["a"]), (Counted(1, 0, hll.sketch(["a"])), EMPTY, EMPTY, EMPTY))
    assert compare(0, log, Counted(1, 0, hll.sketch(["a"])), "redis", HOUR).verdict is Verdict.OK


@given(run=runs, partition=st.integers(0, PARTS - 1))
def test_a_day_rollup_of_exactly_its_components_is_ok(
    run: list[tuple[list[Event], int]], partition: int
) -> None:
    counted = recounted_quarters(run, partition)
    assert counted is not None
    components = [*counted.quarters, Counted(3, 4, hll.sketch(["x", "y"])), EMPTY]
    rollup = union(components)
    assert rollup.registers == hll.merge(c.registers for c in components)
    assert (rollup.clicks, rollup.impressions) == (counted.clicks + 3, counted.impressions + 4)
    part = check_day(partition, "d202511240000", rollup, components)
    assert part.differs == ()
    assert DayAudit("d202511240000", (part,)).verdict is Verdict.OK


def test_a_day_rollup_with_a_stray_user_or_a_wrong_count_is_named() -> None:
    components = [Counted(1, 0, hll.sketch(["a"])), Counted(0, 2, hll.sketch(["b", "c"]))]
    right = union(components)
    stray = Counted(right.clicks, right.impressions, hll.merge([right.registers, hll.sketch(["stray"])]))
    found = DayAudit(
        "d202511241830",
        (
            check_day(0, "d202511241830", stray, components),
            check_day(1, "d202511241830", Counted(2, 2, right.registers), components),
            check_day(2, "d202511241830", EMPTY, []),
        ),
    )
    assert found.verdict is Verdict.MISMATCH
    assert [d.split(":")[0] for d in found.differs] == ["p0 d202511241830 uniques", "p1 d202511241830 clicks"]
    assert "p1 d202511241830 clicks: components 1, rollup 2" in found.line()
    assert found.line().startswith(
        "d202511241830  rollup clicks=3 impressions=4 uniques~4  components clicks=2"
    )
    assert found.line().splitlines()[0].endswith("  mismatch")


def test_axes_are_recounted_as_the_apply_keeps_them_the_bound_in_the_order_values_are_first_named() -> None:
    """With a bound of one value: the first campaign keeps its cell, the next goes to (other); the
    first pair keeps its cell, the next goes to its campaign's (other); a retry of a key counts once."""
    at = HOUR * HOUR_MS
    sent = [
        Event(at, "a", Kind.CLICK, None, (("campaign", "x"), ("creative", "k1"))),
        Event(at + 1, "b", Kind.IMPRESSION, "key", (("campaign", "y"),)),
        Event(at + 2, "b", Kind.IMPRESSION, "key", (("campaign", "y"),)),  # a retry
        Event(at + 3, "c", Kind.CLICK, None, (("campaign", "x"), ("creative", "k2"))),
        Event(at + 4, "d", Kind.IMPRESSION, None, ()),
    ]
    done = digest(
        [subject(PREFIX, HOUR, 0)],
        [schema.encode(batch_of(tuple(sent)))],
        [1],
        [at],
        prefix=PREFIX,
        partitions=1,
        dimensions=("campaign", "creative"),
        pairs=(("campaign", "creative"),),
    )
    got = {axis: (c.clicks, c.impressions, c.uniques) for axis, c in axes_of(done, HOUR, WINDOW, 1).items()}
    assert got == {
        "campaign=x": (2, 0, 2),
        "campaign=(other)": (0, 1, 1),
        "creative=k1": (1, 0, 1),
        "creative=(other)": (1, 0, 1),
        "creative=(none)": (0, 1, 1),
        "(none)": (0, 1, 1),  # an event with no dimension at all
        "campaign+creative=x+k1": (1, 0, 1),
        "campaign+creative=x+(other)": (1, 0, 1),
        "campaign+creative=y+(none)": (0, 1, 1),
    }
    served = dict(axes_of(done, HOUR, WINDOW, 1))
    served["campaign=x"] = dataclasses.replace(served["campaign=x"], clicks=9)
    log = Counted(0, 0, EMPTY.registers, axes=axes_of(done, HOUR, WINDOW, 1))
    found = compare(0, log, Counted(0, 0, EMPTY.registers, axes=served), "redis", HOUR)
    assert found.differs == ("p0 campaign=x clicks: log 2, served 9",)
