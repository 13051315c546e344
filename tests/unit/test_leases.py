from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from projector.projections.leases import fair_share


@given(
    st.integers(min_value=1, max_value=64),
    st.lists(st.text(min_size=1), min_size=1, max_size=10, unique=True),
)
def test_fair_shares_add_up_and_differ_by_at_most_one(partitions: int, members: list[str]) -> None:
    members = sorted(members)
    shares = [fair_share(partitions, members, m) for m in members]
    assert sum(shares) == partitions
    assert max(shares) - min(shares) <= 1
