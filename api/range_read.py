"""Redis adapter of range reads: rows of any span (local hours and days), each the union of the cells
contract.buckets.cover names in the generation's phases, read in bounded steps of one consistent view.

Partitions hold disjoint users, so a row's unique users are the sum over partitions of the union of that
partition's cells, counted by Redis (PFCOUNT) on one node and per partition on a Redis Cluster alike:
no registers are shipped but those of cold cells. A long range is read in steps of at most STEP_CELLS
cell reads, so no script holds Redis long; each step is told the generation and phases each partition
was planned with, and if a replay switched meanwhile it answers so and the whole range is planned and
read again. The total's union is taken over the range's own cover (day rollups where they fit), in the
last step.
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
"""Lua's unpack() stops near 8,000 values: a row naming more keys of one partition than this is counted
here from raw registers, and a total naming more (a generation without day rollups) by PFCOUNT in a
pipeline."""
STEP_CELLS = 250
"""Cell reads (HMGET, and PFCOUNT's keys) one step's script makes at most, over its partitions, unless a
single row needs more: a few milliseconds of Redis (`./just bench-scripts`)."""

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
    users: int = 0
    """Unique users as Redis counted them (an hour read's warm partition)."""


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
        # Each partition's worker records its phases once as it starts, so a read during a start may
        # find every partition changed in turn: one attempt each, and a few for replays' switches.
        for _ in range(self._partitions + 4):
            if self._where is None:
                self._where = await self.locate()
            where = self._where
            plans = {text: plan(rows, parse_phases(text)) for text in {ph for _, ph in where}}
            try:
                found: list[Totals] = []
                users = 0
                for step in _steps(plans, len(rows), 1 if self._split else self._partitions):
                    step_rows, total = await self._step(where, step, scripts)
                    found += step_rows
                    users = total if total is not None else users
                clicks, impressions = sum(r.clicks for r in found), sum(r.impressions for r in found)
                return found, Totals(users, clicks, impressions)
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
        users, counts = self._cells.tails()
        for p in parts:
            head = self._cells.head(GEN_PLACEHOLDER, p)
            args += [*where[p], texts.index(where[p][1]) + 1, head, users, counts]
            args += [self._keys.cold(GEN_PLACEHOLDER, p), self._keys.phases(GEN_PLACEHOLDER, p)]
        args.append(len(texts))
        for text in texts:
            cells = plans[text]
            args += [" ".join(cells.cells), _rows_text(cells.rows)]
            total = len(cells.total) <= SCRIPT_MAX_KEYS and bool(cells.total or not cells.rows)
            args.append(" ".join(map(str, cells.total)) if total else "-1")
        return args

    async def _step(
        self, where: Where, plans: dict[str, CellPlan], scripts: Scripts
    ) -> tuple[list[Totals], int | None]:
        """One step's rows and, when it holds the total, the total's unique users: one script on one
        node, one per partition (its slot only) in one pipeline on a cluster, summed here."""
        widest = max((len(row) for cells in plans.values() for row in cells.rows), default=0)
        mode = "raw" if widest > SCRIPT_MAX_KEYS else "count"
        # The total alone (of a long range) is one script per partition on one node too: its unions are
        # per partition anyway, and each stays short.
        alone = self._split or not any(cells.rows for cells in plans.values())
        calls = [[p] for p in range(self._partitions)] if alone else [list(range(self._partitions))]
        answers = await scripts(
            [
                ([self._keys.generation(p) for p in parts], self._args(where, parts, plans, mode))
                for parts in calls
            ]
        )
        stale = False
        for parts, found in zip(calls, answers, strict=True):
            try:
                self._check(found, parts)
            except Stale:
                stale = True
        if stale:
            raise Stale
        wants_total = any(cells.total for cells in plans.values())
        rows: list[Totals] | None = None
        users: int | None = 0 if wants_total else None
        raw: dict[int, list[Found]] = {}
        for parts, found in zip(calls, answers, strict=True):
            # {-1} alone is no rows and no total (a total too wide for a script), not a raw answer.
            if int(found[0]) == -1 and len(found) > 1:
                raw.update(self._found(where, plans, parts, found))
                continue
            mine = list(map(Totals, found[0:-1:3], found[1:-1:3], found[2:-1:3]))
            rows = mine if rows is None else [_plus(a, b) for a, b in zip(rows, mine, strict=True)]
            if users is not None:
                users = users + found[-1] if found[-1] >= 0 else None
        if raw:
            mine, total = await self._count(where, plans, raw)
            rows = mine if rows is None else [_plus(a, b) for a, b in zip(rows, mine, strict=True)]
            users = None if users is None or total is None else users + total
        if wants_total and users is None:
            users = await self._total_by_pipeline(where, plans)
        return rows or [], users

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
    ) -> tuple[list[Totals], int | None]:
        """Rows and the total from raw cells of some partitions, cold ones from their hours' snapshot
        entries: each partition's unions counted with contract.hll (what PFCOUNT gives), then summed."""
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
        for r in range(len(next(iter(plans.values())).rows)):
            users = clicks = impressions = 0
            for p in cells:
                mine = [sketch(p, i) for i in plans[where[p][1]].rows[r]]
                users += hll.count(hll.merge(s[0] for s in mine)) if mine else 0
                clicks += sum(s[1] for s in mine)
                impressions += sum(s[2] for s in mine)
            rows.append(Totals(users, clicks, impressions))
        totals = [plans[where[p][1]].total for p in cells]
        if not any(totals):
            return rows, None
        users = sum(hll.count(hll.merge(sketch(p, i)[0] for i in plans[where[p][1]].total)) for p in cells)
        return rows, users

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
        without day rollups): a PFCOUNT per partition in a pipeline, then the generations and phases
        checked."""
        parts = range(self._partitions)
        async with self._redis.pipeline(transaction=False) as pipe:
            for p in parts:
                tokens = [plans[where[p][1]].cells[i] for i in plans[where[p][1]].total]
                pipe.pfcount(*(self._cells.users(Cell(where[p][0], p, t)) for t in tokens))
            for p in parts:
                pipe.get(self._keys.generation(p))
                pipe.get(self._keys.phases(where[p][0], p))
            found = await pipe.execute()
        users, after = sum(found[: len(parts)]), found[len(parts) :]
        gens = [_text(raw) or str(FIRST_GENERATION) for raw in after[0::2]]
        if [(g, _text(ph)) for g, ph in zip(gens, after[1::2], strict=True)] != where:
            self._where = None
            raise Stale
        return int(users)


def _plus(a: Totals, b: Totals) -> Totals:
    return Totals(a.unique_users + b.unique_users, a.clicks + b.clicks, a.impressions + b.impressions)


def _steps(plans: dict[str, CellPlan], rows: int, partitions: int) -> list[dict[str, CellPlan]]:
    """The range's plans as steps, each reading at most STEP_CELLS cells over `partitions` (one row at
    least): all in one step when it fits, else steps of consecutive rows, then the total alone."""
    widest = max((len(row) for cells in plans.values() for row in cells.rows), default=1)
    total = max((len(cells.total) for cells in plans.values()), default=0)
    if (rows * widest + total) * partitions <= STEP_CELLS:
        return [plans]
    per_step = max(1, STEP_CELLS // max(1, widest * partitions))
    steps = [
        {text: _slice(cells, start, start + per_step, False) for text, cells in plans.items()}
        for start in range(0, rows, per_step)
    ]
    return [*steps, {text: _slice(cells, 0, 0, True) for text, cells in plans.items()}]


def _slice(cells: CellPlan, start: int, stop: int, total: bool) -> CellPlan:
    """The plan of rows [start, stop), naming only the cells they read (and the total's, if `total`)."""
    if start == 0 and stop >= len(cells.rows) and total:
        return cells
    rows = cells.rows[start:stop]
    used = sorted({i for row in rows for i in row} | (set(cells.total) if total else set()))
    index = {old: new for new, old in enumerate(used)}
    return CellPlan(
        [cells.cells[i] for i in used],
        [[index[i] for i in row] for row in rows],
        [index[i] for i in cells.total] if total else [],
    )


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
