"""A cold hour whose snapshot entry is gone (Redis went back past a newer snapshot) fails loudly."""

from __future__ import annotations

from typing import Any, cast

import pytest
from nats.js.errors import KeyNotFoundError

from projector.fold.deltas import Deltas
from projector.projections.hot_window import apply_thawing
from projector.projections.snapshots import Snapshots
from projector.projections.store import ApplyResult, Outcome, ProjectionStore


class ColdStore:
    async def apply(self, *args: Any, **kwargs: Any) -> ApplyResult:
        return ApplyResult(Outcome.COLD, 10, (("2026010100", 7),))


class EntryGone:
    async def entry(self, partition: int, token: str, at: int) -> None:
        raise KeyNotFoundError


async def test_a_missing_snapshot_entry_is_an_error_naming_the_fix_not_a_stream_not_found() -> None:
    store, snapshots = cast(ProjectionStore, ColdStore()), cast(Snapshots, EntryGone())
    with pytest.raises(RuntimeError, match=r"p3: a cold hour's snapshot entry is gone.*\./just replay"):
        await apply_thawing(store, snapshots, 1, 3, 10, Deltas(last_seq=11))
