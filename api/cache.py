"""Per-worker cache of hour views: refreshed when projectors announce a change, never older than a bound.

A view is served from memory only while it was confirmed by Redis within `staleness_s`; otherwise the
request waits for one refresh, shared by every request for that hour (single flight). Change notices
refresh cached hours in the background, so the current hour stays fresh without readers waiting.
Every value served came from Redis, but a cached view can outlive a wipe of Redis by up to `staleness_s`.
Litestar's response cache keys whole responses by URL with a fixed expiry; it cannot be refreshed by a
change notice, nor share one Redis read among every waiting request, so this one is ours.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

import msgspec

from api.reader import HourTotals
from contract.hours import hour_end, hour_start
from server.answer import JSON, TEXT, Answer


class HourJSON(msgspec.Struct, frozen=True):
    hour_start: str
    hour_end: str
    unique_users: int
    clicks: int
    impressions: int


@dataclass(frozen=True, slots=True)
class Rendering:
    """A view in one media type: its 200 and its 304, the answers both HTTP paths send."""

    etag: str
    ok: Answer
    not_modified: Answer

    @classmethod
    def of(cls, body: bytes, etag: str, media: str, staleness_s: float) -> Rendering:
        headers = {"etag": etag, "cache-control": cache_control(staleness_s), "vary": "Accept"}
        return cls(etag, Answer.of(200, body, media, headers), Answer.of(304, b"", None, headers))


@dataclass(frozen=True, slots=True)
class View:
    """One hour's totals with their two renderings, built once per change."""

    hour: int
    totals: HourTotals
    as_text: Rendering
    as_json: Rendering

    @classmethod
    def of(cls, hour: int, totals: HourTotals, staleness_s: float = 1.0) -> View:
        text = (
            f"unique_users,{totals.unique_users}\nclicks,{totals.clicks}\nimpressions,{totals.impressions}\n"
        ).encode()
        body = HourJSON(
            hour_start=hour_start(hour).isoformat().replace("+00:00", "Z"),
            hour_end=hour_end(hour).isoformat().replace("+00:00", "Z"),
            unique_users=totals.unique_users,
            clicks=totals.clicks,
            impressions=totals.impressions,
        )
        tag = f"{hour}-{totals.unique_users}-{totals.clicks}-{totals.impressions}"
        return cls(
            hour,
            totals,
            Rendering.of(text, f'"{tag}-t"', TEXT, staleness_s),
            Rendering.of(msgspec.json.encode(body), f'"{tag}-j"', JSON, staleness_s),
        )

    @property
    def text(self) -> bytes:
        return self.as_text.ok.body

    @property
    def json(self) -> bytes:
        return self.as_json.ok.body

    @property
    def etag_text(self) -> str:
        return self.as_text.etag

    @property
    def etag_json(self) -> str:
        return self.as_json.etag


def cache_control(staleness_s: float) -> str:
    return f"public, max-age={int(staleness_s)}"


@dataclass(slots=True)
class _Entry:
    view: View | None = None
    confirmed_at: float = 0.0
    loading: asyncio.Task[View] | None = None
    dirty: bool = False


class HourCache:
    def __init__(
        self,
        fetch: Callable[[int], Awaitable[HourTotals]],
        staleness_s: float,
        max_hours: int = 256,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._fetch = fetch
        self._staleness_s = staleness_s
        self._max_hours = max_hours
        self._clock = clock
        self._entries: dict[int, _Entry] = {}

    async def view(self, hour: int) -> View:
        entry = self._entries.get(hour)
        if (
            entry is not None
            and entry.view is not None
            and self._clock() - entry.confirmed_at <= self._staleness_s
        ):
            return entry.view
        return await asyncio.shield(self._load(hour))

    async def latest(self, hour: int) -> View:
        """Like `view`, but waits for a refresh under way (one a change notice started), so a live push
        right after a notice carries the change."""
        entry = self._entries.get(hour)
        if entry is not None and entry.loading is not None:
            return await asyncio.shield(entry.loading)
        return await self.view(hour)

    def changed(self, hours: Iterable[int] | None) -> None:
        """A projector applied events to these hours (None: everything changed, e.g. a replay)."""
        targets = list(self._entries) if hours is None else [h for h in hours if h in self._entries]
        for hour in targets:
            task = self._load(hour)
            task.add_done_callback(_swallow)  # a background refresh that fails is retried on demand

    def _load(self, hour: int) -> asyncio.Task[View]:
        entry = self._entries.get(hour)
        if entry is None:
            if len(self._entries) >= self._max_hours:
                self._entries.pop(next(iter(self._entries)))
            entry = self._entries[hour] = _Entry()
        if entry.loading is not None:
            entry.dirty = True  # a change landed while this load was under way: load once more
            return entry.loading
        entry.loading = asyncio.get_running_loop().create_task(self._refresh(hour, entry))
        return entry.loading

    async def _refresh(self, hour: int, entry: _Entry) -> View:
        try:
            while True:
                entry.dirty = False
                asked_at = self._clock()
                view = View.of(hour, await self._fetch(hour), self._staleness_s)
                entry.view, entry.confirmed_at = view, asked_at
                if not entry.dirty:
                    return view
        finally:
            entry.loading = None


def _swallow(task: asyncio.Task[View]) -> None:
    with contextlib.suppress(asyncio.CancelledError, Exception):
        task.result()
