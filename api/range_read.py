"""Redis adapter of range reads: rows of any span (local hours and days), each the union of the cells
contract.buckets.cover names in the generation's phases, read in one script and one consistent view.

The script is told the generation and phases each partition was planned with; if a replay switched
meanwhile, it answers so and the range is planned again. On one node one script reads every partition
and counts there; on a Redis Cluster one script per partition (its slot only) runs in one pipeline and
returns raw registers, and the unions are counted here with contract.hll, as for cold cells. The total's
union is taken over the range's own cover (day rollups where they fit), not over every row's cells.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from api.cells import CellPlan, plan
from api.cold import ColdHour, ColdSource, EntryGone
from contract import hll
from contract.buckets import owning_hour, parse_phases
from contract.cells import Cell, CellLayout
from contract.hours import hour_token
from contract.keys import FIRST_GENERATION, GEN_PLACEHOLDER, Keys
from deploy.projections_client import ProjectionsClient
from server.failures import Unavailable

SCRIPT_MAX_KEYS = 7000
"""Lua's unpack() stops near 8,000 values: a row naming more keys than this is counted here from raw
registers, and a total naming more (a generation without day rollups) by PFCOUNT in a pipeline."""

Where = list[tuple[str, str]]
"""Per partition, its live generation and its phases text, as the range script reads them."""
Scripts = Callable[[list[tuple[list[str], list[str | int]]]], Awaitable[list[Any]]]


@dataclass(frozen=True, slots=True)
class Totals:
    unique_users: int
    clicks: int
    impressions: int


class Stale(Exception):
    """A partition's generation or phases changed since the range was planned: plan again."""


@dataclass(frozen=True, slots=True)
class Found:
    """One cell of one partition as a read found it: cold (its hour's snapshot entry watermark), or
    its HyperLogLog's bytes (b"": none) and counters."""

    at: int | None
    raw: bytes
    clicks: int
    impressions: int


class RangeReads:
    def __init__(
        self, redis: ProjectionsClient, keys: Keys, partitions: int, cold: ColdSource | None, split: bool
    ) -> None:
        self._redis = redis
        self._keys = keys
        self._cells = CellLayout(keys)
        self._partitions = partitions
        self._cold = cold
        self._split = split
        self._where: Where | None = None
        """What the last read found (generations and phases): the next one plans with it."""

    async def read(
        self, rows: Sequence[Sequence[tuple[int, int]]], scripts: Scripts
    ) -> tuple[list[Totals], Totals]:
        """Each row's totals (a row is one or more [start, end) spans) and all rows', uniques as unions."""
        for _ in range(4):
            if self._where is None:
                self._where = await self.locate()
            where = self._where
            plans = {text: plan(rows, parse_phases(text)) for text in {ph for _, ph in where}}
            try:
                if self._split:
                    return await self._split_read(where, plans, scripts)
                return await self._one_read(where, plans, scripts)
            except Stale:
                pass  # what changed is known (or forgotten, to be looked up): plan again
        raise Unavailable("Redis", "the generation kept switching during a range read")

    async def locate(self) -> Where:
        """Every partition's live generation and its phases text."""
        parts = range(self._partitions)
        async with self._redis.pipeline(transaction=False) as pipe:
            for p in parts:
                pipe.get(self._keys.generation(p))
            gens = [_text(raw) or str(FIRST_GENERATION) for raw in await pipe.execute()]
        async with self._redis.pipeline(transaction=False) as pipe:
            for p in parts:
                pipe.get(self._keys.phases(gens[p], p))
            found = await pipe.execute()
        return [(g, raw.decode() if raw else "") for g, raw in zip(gens, found, strict=True)]

    def _args(self, where: Where, parts: Sequence[int], plans: dict[str, CellPlan], mode: str) -> list[Any]:
        """The range script's arguments (see range.lua) for `parts`."""
        texts = list(dict.fromkeys(where[p][1] for p in parts))
        args: list[Any] = [FIRST_GENERATION, mode, len(parts)]
        for p in parts:
            users, counts = self._cells.tails()
            head = self._cells.head(GEN_PLACEHOLDER, p)
            args += [*where[p], texts.index(where[p][1]) + 1, head, users, counts]
            args += [self._keys.cold(GEN_PLACEHOLDER, p), self._keys.phases(GEN_PLACEHOLDER, p)]
        args.append(len(texts))
        named = sum(len(plans[where[p][1]].total) for p in parts)
        for text in texts:
            cells = plans[text]
            args += [" ".join(cells.cells), _rows_text(cells.rows)]
            total = named <= SCRIPT_MAX_KEYS and mode == "count"
            args.append(" ".join(map(str, cells.total)) if total else "-1")
        return args

    async def _one_read(
        self, where: Where, plans: dict[str, CellPlan], scripts: Scripts
    ) -> tuple[list[Totals], Totals]:
        parts = range(self._partitions)
        widest = max(len(row) for cells in plans.values() for row in cells.rows)
        mode = "raw" if widest * self._partitions > SCRIPT_MAX_KEYS else "count"
        keys = [self._keys.generation(p) for p in parts]
        (found,) = await scripts([(keys, self._args(where, parts, plans, mode))])
        self._check(found, parts)
        if int(found[0]) == -1:
            return await self._count(where, plans, self._found(where, plans, parts, found))
        rows = list(map(Totals, found[0:-1:3], found[1:-1:3], found[2:-1:3]))
        users = found[-1] if found[-1] >= 0 else await self._total_by_pipeline(where, plans)
        return rows, Totals(users, sum(r.clicks for r in rows), sum(r.impressions for r in rows))

    def _check(self, found: list[Any], parts: Sequence[int]) -> None:
        """Raise Stale (remembering what the script found) when it answered -2."""
        if int(found[0]) != -2:
            return
        where = self._where if self._where is not None else [("", "")] * self._partitions
        where = list(where)
        for i, p in enumerate(parts):
            gen, phases = found[1 + 2 * i], found[2 + 2 * i]
            where[p] = (_text(gen), _text(phases))
        self._where = where if all(g for g, _ in where) else None
        raise Stale

    async def _split_read(
        self, where: Where, plans: dict[str, CellPlan], scripts: Scripts
    ) -> tuple[list[Totals], Totals]:
        """One range script per partition (its slot only), all in one pipeline; unions counted here."""
        parts = range(self._partitions)
        calls = [([self._keys.generation(p)], self._args(where, [p], plans, "raw")) for p in parts]
        answers = await scripts(calls)
        stale = False
        for p, found in enumerate(answers):
            try:
                self._check(found, [p])
            except Stale:
                stale = True
        if stale:
            raise Stale
        cells: dict[int, list[Found]] = {}
        for p, found in enumerate(answers):
            cells.update(self._found(where, plans, [p], found))
        return await self._count(where, plans, cells)

    def _found(
        self, where: Where, plans: dict[str, CellPlan], parts: Sequence[int], found: list[Any]
    ) -> dict[int, list[Found]]:
        """A raw answer (-1, then per partition and cell four values) as each partition's cells."""
        cells: dict[int, list[Found]] = {}
        i = 1
        for p in parts:
            mine = []
            for _ in plans[where[p][1]].cells:
                at, raw, clicks, impressions = found[i : i + 4]
                mine.append(Found(int(at) if at else None, raw or b"", int(clicks), int(impressions)))
                i += 4
            cells[p] = mine
        return cells

    async def _count(
        self, where: Where, plans: dict[str, CellPlan], cells: dict[int, list[Found]]
    ) -> tuple[list[Totals], Totals]:
        """Totals from raw cells, cold ones from their hours' snapshot entries, unions counted with
        contract.hll (what PFCOUNT gives)."""
        cold = await self._cold_cells(where, plans, cells)
        sketches: dict[tuple[int, int], tuple[bytes, int, int]] = {}

        def sketch(p: int, i: int) -> tuple[bytes, int, int]:
            if (p, i) not in sketches:
                c = cells[p][i]
                entry = cold.get((p, i))
                sketches[p, i] = (
                    (entry.registers, entry.clicks, entry.impressions)
                    if entry is not None
                    else (hll.registers(c.raw), c.clicks, c.impressions)
                )
            return sketches[p, i]

        rows: list[Totals] = []
        unions: list[bytes] = []
        for r in range(len(next(iter(plans.values())).rows)):
            parts = [(p, i) for p in cells for i in plans[where[p][1]].rows[r]]
            union = hll.merge(sketch(p, i)[0] for p, i in parts)
            unions.append(union)
            clicks = sum(sketch(p, i)[1] for p, i in parts)
            impressions = sum(sketch(p, i)[2] for p, i in parts)
            rows.append(Totals(hll.count(union), clicks, impressions))
        total = hll.count(hll.merge(unions))
        return rows, Totals(total, sum(r.clicks for r in rows), sum(r.impressions for r in rows))

    async def _cold_cells(
        self, where: Where, plans: dict[str, CellPlan], cells: dict[int, list[Found]]
    ) -> dict[tuple[int, int], ColdHour]:
        """Each cold cell (partition, index) as its hour's snapshot entry holds it."""
        wanted = [(p, i, c.at) for p, mine in cells.items() for i, c in enumerate(mine) if c.at is not None]
        if not wanted:
            return {}
        source = self._cold
        if source is None:
            raise Unavailable("NATS", "cold hours are read from the snapshot store, which is not connected")
        tokens = {(p, i): plans[where[p][1]].cells[i] for p, i, _ in wanted}
        hour_of = {cell: hour_token(owning_hour(token) or 0) for cell, token in tokens.items()}
        entries = list(dict.fromkeys((p, hour_of[p, i], at) for p, i, at in wanted))
        try:
            found = await asyncio.gather(*(source.hour(p, t, at) for p, t, at in entries))
        except EntryGone:
            # Thawed and snapshotted again since Redis named the entry: Redis names the new one now.
            raise Stale from None
        hours = dict(zip(entries, found, strict=True))
        return {(p, i): hours[p, hour_of[p, i], at].cell(tokens[p, i]) for p, i, at in wanted}

    async def _total_by_pipeline(self, where: Where, plans: dict[str, CellPlan]) -> int:
        """The range's unique users when its cover names too many keys for a script (a generation
        without day rollups): one PFCOUNT in a pipeline, then the generations and phases checked."""
        every = [
            self._cells.users(Cell(where[p][0], p, plans[where[p][1]].cells[i]))
            for p in range(self._partitions)
            for i in plans[where[p][1]].total
        ]
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.pfcount(*every)
            for p in range(self._partitions):
                pipe.get(self._keys.generation(p))
                pipe.get(self._keys.phases(where[p][0], p))
            users, *after = await pipe.execute()
        gens = [_text(raw) or str(FIRST_GENERATION) for raw in after[0::2]]
        if [(g, _text(ph)) for g, ph in zip(gens, after[1::2], strict=True)] != where:
            self._where = None
            raise Stale
        return int(users)


def _rows_text(rows: list[list[int]]) -> str:
    """Rows as the range script reads them: `-1 k r` when each of the r rows is the next k cells (the
    usual case, sent in a few bytes), else each row as its length and its cell indices."""
    k = len(rows[0]) if rows else 0
    if all(len(row) == k and row[0] == r * k and row[-1] == r * k + k - 1 for r, row in enumerate(rows)):
        return f"-1 {k} {len(rows)}"
    flat: list[int] = []
    for row in rows:
        flat.append(len(row))
        flat += row
    return " ".join(map(str, flat))


def _text(raw: bytes | str | None) -> str:
    if raw is None:
        return ""
    return raw.decode() if isinstance(raw, bytes) else raw
