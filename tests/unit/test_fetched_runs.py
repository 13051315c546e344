"""A fetch is applied in runs of bounded payload: every message in exactly one run, in order, a message
larger than the bound alone in its own run, so no apply folds more than the bound (or one message)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from projector.log.fetched import Fetched


def fetched_of(sizes: list[int]) -> Fetched:
    fetched = Fetched()
    for i, size in enumerate(sizes):
        reply = f"$JS.ACK.ANALYTICS.projector-p0.1.{i + 1}.{i + 1}.1764079200123456789.{len(sizes) - i - 1}"
        fetched.add(b"analytics.events.2025112513.0", reply.encode(), b"x" * size)
    return fetched


@given(
    st.lists(st.integers(min_value=0, max_value=300), max_size=40), st.integers(min_value=1, max_value=500)
)
def test_runs_cover_the_fetch_in_order_each_within_the_bound_or_one_message(
    sizes: list[int], bound: int
) -> None:
    fetched = fetched_of(sizes)
    runs = fetched.runs(bound)
    assert [seq for run in runs for seq in run.seqs] == fetched.seqs
    assert [r for run in runs for r in run.replies] == fetched.replies
    for run in runs:
        assert len(run) >= 1 or len(fetched) == 0
        assert sum(map(len, run.payloads)) <= bound or len(run) == 1
        assert run.pending == fetched.pending


def test_a_fetch_within_the_bound_is_one_run_and_a_large_message_runs_alone() -> None:
    small = fetched_of([10, 10, 10])
    assert small.runs(100) == [small]
    runs = fetched_of([10, 500, 10, 10]).runs(100)
    assert [run.seqs for run in runs] == [[1], [2], [3, 4]]
