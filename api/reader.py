"""Redis adapter of the read side: one hour's totals in one round trip, and ranges of any rows
(api.range_read); hours that left Redis (cold) are read through to the snapshot store.

On one node a script reads every partition at once and counts there. On a Redis Cluster
(`split_by_partition`) a script may only touch one partition's slot: one call per partition in one
pipeline returns that partition's HyperLogLog bytes and counters (one atomic view of the partition),
and the unions are counted here with contract.hll, as for cold hours. Both give identical answers.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from importlib.resources import files
from typing import Any

import redis.exceptions
from redis.commands.core import AsyncScript

from api.cells import joined
from api.cold import ColdSource, EntryGone
from api.range_read import SCRIPT_MAX_KEYS, Found, RangeReads, Totals
from contract import hll
from contract.cells import CellLayout
from contract.hours import HOUR_MS, hour_token
from contract.keys import FIRST_GENERATION, GEN_PLACEHOLDER, Keys
from deploy.projections_client import ProjectionsClient
from server.failures import Unavailable

__all__ = ["SCRIPT_MAX_KEYS", "HourTotals", "Reader"]

HourTotals = Totals


COUNTS_CELLS = 2
"""Cells a counts call reads: an hour's axes hash of 10,000 campaigns and their creatives is about 40 ms
of Lua here, and a day in one call outlasted the 1 s client timeout (`./just bench-dimensions`)."""
USERS_AXES = 50
"""Axes a users call merges over the cells: a day's sort by unique users of 10,000 campaigns is
200 calls of about 30 ms, not one of 6 s."""


class NotKept(Exception):
    """The hour's axis cells are not (all) in Redis: a filter or breakdown of it cannot be answered."""


class Reader:
    def __init__(
        self,
        redis: ProjectionsClient,
        keys: Keys,
        partitions: int,
        cold: ColdSource | None = None,
        *,
        split_by_partition: bool = False,
    ) -> None:
        self._redis = redis
        self._keys = keys
        self._cells = CellLayout(keys)
        self._partitions = partitions
        self._cold = cold
        """Where cold hours are read from (None: nowhere, a cold hour is then unavailable)."""
        self._split = split_by_partition
        self._read = redis.register_script(files("api").joinpath("read.lua").read_text())
        self._range = redis.register_script(files("api").joinpath("range.lua").read_text())
        self._axes = redis.register_script(files("api").joinpath("axes.lua").read_text())
        self._ranges = RangeReads(redis, keys, partitions, cold, split_by_partition)

    async def buckets(self, buckets: Sequence[Sequence[int]]) -> tuple[list[HourTotals], HourTotals]:
        """Each bucket's totals (a bucket is some UTC hours) and all buckets', uniques as unions."""
        rows = [joined([[(h * HOUR_MS, (h + 1) * HOUR_MS) for h in hours]]) for hours in buckets]
        return await self._ranges.read(rows, self._range_calls)

    async def spans(self, spans: Sequence[tuple[int, int]]) -> tuple[list[HourTotals], HourTotals]:
        """Each span's totals (a span is [start, end) on quarter-hours, as local hours and days are) and
        the whole range's, uniques as unions of exactly the cells inside."""
        return await self._ranges.read([[span] for span in spans], self._range_calls)

    async def _range_calls(self, calls: list[tuple[list[str], list[str | int]]]) -> list[Any]:
        if len(calls) > 1:
            return await self._scripts(self._range, calls)
        ((keys, args),) = calls
        return [await self._range(keys=keys, args=args)]

    async def _scripts(
        self, script: AsyncScript, calls: list[tuple[list[str], list[str | int]]]
    ) -> list[Any]:
        """Each call's script run in one pipelined round trip (EVALSHA; loaded first where missing)."""
        for attempt in range(2):
            try:
                async with self._redis.pipeline(transaction=False) as pipe:
                    for keys, args in calls:
                        # A cluster pipeline refuses pipe.evalsha but routes a raw EVALSHA by its keys
                        pipe.execute_command("EVALSHA", script.sha, len(keys), *keys, *args)
                    return list(await pipe.execute())
            except redis.exceptions.NoScriptError:
                if attempt:
                    raise
                await self._redis.script_load(script.script)
            except RuntimeError as exc:
                # redis-py's cluster pipeline passes on uvloop's RuntimeError for a connection the node
                # closed under it (seen while a slot moved) instead of a ConnectionError: the same
                # fault, and a 503 like it, not a 500.
                if "closed" not in str(exc):
                    raise
                raise redis.exceptions.ConnectionError(str(exc)) from exc
        raise AssertionError("unreachable")

    async def hour(self, hour: int) -> HourTotals:
        return await self._hour(hour, 0)

    def _hour_call(self, hour: int, parts: Sequence[int]) -> tuple[list[str], list[str | int]]:
        """read.lua's keys and arguments for the hour in `parts` (see read.lua)."""
        users, counts = zip(*(self._cells.template(p, hour_token(hour)) for p in parts), strict=True)
        args: list[str | int] = [FIRST_GENERATION, len(parts), hour_token(hour), *users, *counts]
        args += [self._keys.cold(GEN_PLACEHOLDER, p) for p in parts]
        return [self._keys.generation(p) for p in parts], args

    async def _hour(self, hour: int, attempt: int) -> HourTotals:
        if self._split:
            calls = [self._hour_call(hour, [p]) for p in range(self._partitions)]
            answers = await self._scripts(self._read, calls)
        else:
            keys, args = self._hour_call(hour, range(self._partitions))
            answers = [await self._read(keys=keys, args=args)]
        if all(int(found[0]) >= 0 for found in answers):
            return HourTotals(*(sum(int(found[k]) for found in answers) for k in range(3)))
        parts: list[Found] = []
        for found in answers:
            if int(found[0]) >= 0:
                parts.append(Found(None, b"", int(found[1]), int(found[2]), int(found[0])))
                continue
            for i in range(1, len(found), 4):
                at, users, clicks, impressions = found[i : i + 4]
                parts.append(Found(int(at) if at else None, b"", int(clicks), int(impressions), int(users)))
        return await self._count(hour, parts, attempt)

    async def _count(self, hour: int, parts: list[Found], attempt: int) -> HourTotals:
        """The totals of an hour cold in some partitions: the cold ones are counted from their snapshot
        entries (contract.hll gives what PFCOUNT gives), the others as Redis counted them."""
        cold = [(p, c) for p, c in enumerate(parts) if c.at is not None]
        if cold and self._cold is None:
            raise Unavailable("NATS", "cold hours are read from the snapshot store, which is not connected")
        try:
            source = self._cold
            found = await asyncio.gather(
                *(source.hour(p, hour_token(hour), c.at or 0) for p, c in cold if source is not None)
            )
        except EntryGone as gone:
            # Thawed and snapshotted again since Redis named the entry: Redis names the new one now.
            if attempt >= 3:
                raise Unavailable("NATS", f"snapshot entry {gone} is missing") from None
            return await self._hour(hour, attempt + 1)
        warm = [c for c in parts if c.at is None]
        return HourTotals(
            sum(hll.count(h.registers) for h in found) + sum(c.users for c in warm),
            sum(h.clicks for h in found) + sum(c.clicks for c in warm),
            sum(h.impressions for h in found) + sum(c.impressions for c in warm),
        )

    async def axis_counts(self, hours: Sequence[str], prefix: str) -> dict[str, tuple[int, int]]:
        """Every axis starting with `prefix` ("campaign=") the hours have, with its clicks and
        impressions over the hours and all partitions."""
        found: dict[str, tuple[int, int]] = {}
        chunks = [(hours[i : i + COUNTS_CELLS], [prefix]) for i in range(0, len(hours), COUNTS_CELLS)]
        for answer in (a for answers in await self._axis_calls(chunks, "counts", 1) for a in answers):
            for i in range(1, len(answer), 3):
                axis = answer[i].decode() if isinstance(answer[i], bytes) else str(answer[i])
                clicks, impressions = found.get(axis, (0, 0))
                found[axis] = (clicks + int(answer[i + 1]), impressions + int(answer[i + 2]))
        return found

    async def axis_totals(self, hours: Sequence[str], axes: Sequence[str]) -> list[HourTotals]:
        """Each axis's totals over the hours and all partitions ("a|b": the union of two): unique users
        are a union over the hours, and add up over partitions, which hold disjoint users."""
        chunks = [list(axes[i : i + USERS_AXES]) for i in range(0, len(axes), USERS_AXES)]
        found = await self._axis_calls([(hours, chunk) for chunk in chunks], "users", 1)
        return [
            row for answers, chunk in zip(found, chunks, strict=True) for row in _summed(answers, len(chunk))
        ]

    async def axis_rows(self, buckets: Sequence[Sequence[str]], axis: str) -> list[HourTotals]:
        """One axis's totals in each bucket of hours (a filtered range's rows), in one round trip."""
        sets = [(bucket, [axis]) for bucket in buckets]
        return [_summed(answers, 1)[0] for answers in await self._axis_calls(sets, "users")]

    async def _axis_calls(
        self, sets: Sequence[tuple[Sequence[str], list[str]]], mode: str, per_trip: int = 0
    ) -> list[list[Any]]:
        """axes.lua over each set of cell tokens (hours, and quarter-hours of split hours) with its own
        arguments, in every partition, pipelined `per_trip` sets a round trip (0: all at once): per set,
        each partition's answer; NotKept when an hour's axis cells are not in Redis. Sets are kept
        small (COUNTS_CELLS, USERS_AXES), so no one script holds Redis long and every answer comes
        well within the client's timeout."""
        calls: list[tuple[list[str], list[str | int]]] = []
        for hours, rest in sets:
            tokens = list(hours)
            for p in range(self._partitions):
                templates = [self._keys.cold(GEN_PLACEHOLDER, p), self._cells.head(GEN_PLACEHOLDER, p)]
                args: list[str | int] = [FIRST_GENERATION, *templates, len(tokens), *tokens, mode, *rest]
                calls.append(([self._keys.generation(p)], args))
        # A round trip per few sets: Redis runs a pipeline's scripts before it sends any answer back,
        # so one pipeline of a day's chunks waited as long as one big script did.
        answers: list[Any] = []
        trip = self._partitions * (per_trip or len(sets) or 1)
        for start in range(0, len(calls), trip):
            answers += await self._scripts(self._axes, calls[start : start + trip])
        for answer in answers:
            state = int(answer[0])
            if state == 0:
                continue
            token = answer[1].decode() if isinstance(answer[1], bytes) else str(answer[1])
            if state == 1:
                raise NotKept(
                    f"hour {token}'s breakdowns left Redis with it (older than ANALYTICS_HOT_HOURS, or "
                    "brought back from the snapshot store, which keeps none)"
                )
            if len(token) > len(hour_token(0)):
                raise NotKept(
                    f"quarter-hour {token} keeps no breakdowns of its own: the zone's day starts inside "
                    "its hour, and the hour was counted before the zone was in ANALYTICS_DAY_ZONES; "
                    "./just replay builds them from the log"
                )
            raise NotKept(
                f"hour {token} was counted without breakdowns (before them, or with no "
                "ANALYTICS_DIMENSIONS); ./just replay builds them from the log"
            )
        n = self._partitions
        return [answers[i : i + n] for i in range(0, len(answers), n)]


def _summed(answers: list[Any], rows: int) -> list[HourTotals]:
    """Rows of "users" answers (users, clicks, impressions after the state) summed over partitions."""
    sums = [[0, 0, 0] for _ in range(rows)]
    for answer in answers:
        for row, at in zip(sums, range(1, len(answer), 3), strict=True):
            for k in range(3):
                row[k] += int(answer[at + k])
    return [HourTotals(*row) for row in sums]
