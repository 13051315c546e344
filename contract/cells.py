"""What a stored cell is: one bucket of one partition in one generation, its Redis keys in order, and the
header every cell script reads to find them.

A cell is the unit every projection is made of: the users (a HyperLogLog) and the counters (a hash of
clicks and impressions) of one stored bucket (contract.buckets: an hour, a quarter-hour of it, or a day
rollup) of one partition, in one generation. Every script that writes cells (apply, evict, thaw,
restore, swap_hour, rebuild_day) is called the same way, through `CellLayout.call`:

    KEYS  the guard (the partition's generation pointer, its fence, the generation's watermark), then
          the script's own named keys, then each cell's keys in the order of ROLES;
    ARGV  the generation to check ("" = none), the epoch ("" = unfenced), the watermark to check
          ("" = none), the number of named keys, the keys per cell; then the script's own arguments.

The scripts read that header through one shared prelude (projector/projections/scripts/cells.lua):
they find a cell's keys by its number, never by position arithmetic of their own, and run one guard.
A dimension is the one axis beyond time so far: an hour also counts its events per value of each
dimension (`axis` "campaign=spring-sale"), those without it ("campaign=(none)"), those past the
cardinality bound ("campaign=(other)"), and those carrying no dimension at all ("(none)"); a declared
pair of dimensions is one more axis per event (`pair_axis`). An axis cell is lighter than a bucket's:
its users are a HyperLogLog of its own (`...:<hour>:<axis>:users`), while its counters are one field of
the hour's axes hash (`...:<hour>:axes`, field `<axis>`, value "<clicks> <impressions>"), so an apply
reads and writes every value of an hour in two calls, and a breakdown reads an hour's counters in one.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from contract.buckets import QUARTERS_PER_HOUR, quarter_token
from contract.hours import hour_token
from contract.keys import GEN_PLACEHOLDER, Keys

ROLES = ("users", "counts")
"""A cell's keys in order: the HyperLogLog of its users, the hash of its counters."""
KEYS_PER_CELL = len(ROLES)
COUNTERS = ("clicks", "impressions")
"""The fields of a cell's counters hash."""
GUARD_KEYS = 3
"""Every cell script's first keys: the generation pointer, the fence, the watermark."""
HEADER_ARGS = 5
"""Every cell script's first arguments (see the module docstring); its own start after them."""


NONE = "(none)"
"""The value of a dimension an event was sent without; alone, the axis of events with no dimension."""
OTHER = "(other)"
"""The value every new value of a dimension counts under once the hour has its bound of values."""
AXES = "axes"
"""What follows an hour's token in the key of its axes hash: axis -> "<clicks> <impressions>", and
"#<dimension>" -> how many values of it have cells; "!partial" when the hour's axis cells are
incomplete (it came back from the snapshot store, which keeps no axes)."""


def axis_of(dimension: str, value: str) -> str:
    """The axis of the events carrying `value` of `dimension` (NONE, OTHER or a value)."""
    return f"{dimension}={value}"


def value_of(axis: str) -> str:
    """The value of a dimension's axis ("campaign=x" -> "x"); NONE for the axis of no dimension."""
    return axis.partition("=")[2] or NONE


def axis_counts(raw: bytes | str | None) -> tuple[int, int]:
    """(clicks, impressions) of an axes hash field's value (None: an axis with none)."""
    if raw is None:
        return 0, 0
    clicks, _, impressions = (raw.decode() if isinstance(raw, bytes) else raw).partition(" ")
    return int(clicks), int(impressions)


def pair_axis(first: str, second: str, value: str, then: str) -> str:
    """The axis of a declared pair of dimensions (`first` "campaign", `second` "creative"): the events
    with `value` of the first and `then` of the second ("campaign+creative=spring-sale+c12"; `then`
    NONE for those without the second, OTHER past the pair's bound). Values never hold "+"."""
    return f"{first}+{second}={value}+{then}"


def axes_of(
    dims: Sequence[tuple[str, str]], declared: Sequence[str], pairs: Sequence[tuple[str, str]] = ()
) -> tuple[str, ...]:
    """The axis cells one event counts in: one per declared dimension (its value, or NONE), and one
    per declared pair whose first dimension it carries; or NONE alone when it carries none of them."""
    given = dict(dims)
    if not any(name in given for name in declared):
        return (NONE,)
    axes = [axis_of(name, given.get(name, NONE)) for name in declared]
    for first, second in pairs:
        if first in given:
            axes.append(pair_axis(first, second, given[first], given.get(second, NONE)))
    return tuple(axes)


@dataclass(frozen=True, slots=True)
class Cell:
    """One stored bucket (an hour, quarter-hour or day rollup token) of one partition in one generation."""

    gen: int | str
    partition: int
    token: str

    @classmethod
    def of_hour(cls, gen: int | str, partition: int, hour: int) -> Cell:
        return cls(gen, partition, hour_token(hour))


@dataclass(frozen=True, slots=True)
class CellLayout:
    """The one place that turns cells into keys, and a cell script's call into its KEYS and ARGV."""

    keys: Keys

    def head(self, gen: int | str, partition: int) -> str:
        """What every cell key of the generation and partition starts with, followed by its token."""
        return f"{self.keys.gen_prefix(partition)}{gen}:"

    def keys_of(self, cell: Cell) -> tuple[str, ...]:
        """The cell's keys, in the order of ROLES."""
        head = f"{self.head(cell.gen, cell.partition)}{cell.token}:"
        return tuple(head + role for role in ROLES)

    def axes(self, gen: int | str, partition: int, hour: int) -> str:
        """The hour's axes hash (AXES)."""
        return self.axes_at(gen, partition, hour_token(hour))

    def axes_at(self, gen: int | str, partition: int, token: str) -> str:
        """The axes hash of an hour or (in a split hour, contract.buckets.split_hours) a quarter-hour."""
        return f"{self.head(gen, partition)}{token}:{AXES}"

    def axis_users(self, gen: int | str, partition: int, hour: int, axis: str) -> str:
        """The HyperLogLog of the users of one axis of an hour (its counters are a field of `axes`)."""
        return f"{self.head(gen, partition)}{hour_token(hour)}:{axis}:users"

    def users(self, cell: Cell) -> str:
        """The HyperLogLog of the cell's users."""
        return self.keys_of(cell)[0]

    def counts(self, cell: Cell) -> str:
        """The hash of the cell's counters (COUNTERS)."""
        return self.keys_of(cell)[1]

    def tails(self) -> tuple[str, ...]:
        """What follows a cell's token in each of its keys, in the order of ROLES (for read scripts that
        build keys from `head` templates themselves)."""
        return tuple(f":{role}" for role in ROLES)

    def template(self, partition: int, token: str) -> tuple[str, ...]:
        """The cell's keys with the generation left as GEN_PLACEHOLDER, for scripts that read it first."""
        return self.keys_of(Cell(GEN_PLACEHOLDER, partition, token))

    @staticmethod
    def hour_cells(gen: int | str, partition: int, hour: int) -> tuple[Cell, ...]:
        """An hour and its quarter-hours, the hour first: what leaves Redis, comes back or is swapped as
        one."""
        tokens = [hour_token(hour)] + [quarter_token(hour, q) for q in range(QUARTERS_PER_HOUR)]
        return tuple(Cell(gen, partition, t) for t in tokens)

    def cell_keys(self, cells: Iterable[Cell]) -> list[str]:
        """Every key of the cells, cell by cell, each in the order of ROLES."""
        return [key for cell in cells for key in self.keys_of(cell)]

    def call(
        self,
        gen: int | str,
        partition: int,
        *,
        check: int | str = "",
        epoch: str = "",
        watermark: int | str = "",
        named: Sequence[str] = (),
        cells: Iterable[Cell] = (),
    ) -> tuple[list[str], list[str | int]]:
        """KEYS and the ARGV header of a cell script on `partition` in `gen`: the script refuses unless
        the partition's live generation is `check`, its fence `epoch` and `gen`'s watermark `watermark`
        (each "" = not checked). The script's own arguments are appended to the ARGV returned."""
        keys = [
            self.keys.generation(partition),
            self.keys.fence(partition),
            self.keys.watermark(gen, partition),
            *named,
            *self.cell_keys(cells),
        ]
        return keys, [check, epoch, watermark, len(named), KEYS_PER_CELL]
