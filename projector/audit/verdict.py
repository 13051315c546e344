"""Pure: one hour of one partition recounted from its log messages with the projector's fold, compared
with what is served for it, and the verdict over an hour's partitions."""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

from contract import hll
from contract.hours import hour_token
from contract.schema import Kind
from projector.fold.deltas import Keyed
from projector.fold.digest import Digest, digest


@dataclass(frozen=True, slots=True)
class Counted:
    """One hour of one partition: its counters and its HyperLogLog registers (one byte each)."""

    clicks: int
    impressions: int
    registers: bytes

    @property
    def uniques(self) -> int:
        return hll.count(self.registers)


EMPTY = Counted(0, 0, bytes(hll.REGISTERS))


class Verdict(enum.StrEnum):
    OK = "ok"
    MISMATCH = "mismatch"
    PENDING = "not yet applied"
    """The log holds events of the hour past the partition's watermark: the projector is behind."""
    UNREADABLE = "unreadable"
    """A message of an unknown schema version: this audit cannot fold it."""


@dataclass(frozen=True, slots=True)
class PartitionAudit:
    partition: int
    log: Counted
    served: Counted
    source: str
    """Where the served value came from: `redis`, or `snapshot` for a cold hour."""
    verdict: Verdict
    differs: tuple[str, ...] = ()


def recount(
    subjects: Sequence[str],
    payloads: Sequence[bytes],
    seqs: Sequence[int],
    stamps: Sequence[int],
    *,
    hour: int,
    prefix: str,
    partitions: int,
    window_ms: int,
) -> Counted | None:
    """The hour's messages (one partition, stream order; messages of other hours only lend their keyed
    events) folded as the projector folds them, keyed events decided as apply.lua decides them; None
    when one is of a schema version unknown here."""
    return counted_of(
        digest(subjects, payloads, seqs, stamps, prefix=prefix, partitions=partitions), hour, window_ms
    )


def counted_of(done: Digest, hour: int, window_ms: int) -> Counted | None:
    if done.unknown is not None:
        return None
    delta = done.deltas.hours.get(hour)
    users = set(delta.users) if delta else set()
    clicks = delta.clicks if delta else 0
    impressions = delta.impressions if delta else 0
    for event in counted_keyed(done.deltas.keyed, window_ms):
        if event.hour != hour:
            continue
        users.add(event.user)
        if event.kind is Kind.CLICK:
            clicks += 1
        else:
            impressions += 1
    return Counted(clicks, impressions, hll.sketch(users))


def first_keyed_ms(done: Digest, hour: int) -> int | None:
    """When the hour's first keyed event was stored (None: the hour has none)."""
    return min((k.stream_ms for k in done.deltas.keyed if k.hour == hour), default=None)


def counted_keyed(keyed: Sequence[Keyed], window_ms: int) -> list[Keyed]:
    """The keyed events that count, in stream order: a user's key counts again only once the window
    has passed since it last counted (apply.lua's rule, starting from no entries)."""
    last: dict[str, int] = {}
    counted = []
    for event in keyed:
        seen = last.get(event.member)
        if seen is None or event.stream_ms - seen > window_ms:
            last[event.member] = event.stream_ms
            counted.append(event)
    return counted


def compare(partition: int, log: Counted, served: Counted, source: str) -> PartitionAudit:
    """Counters exactly, the HyperLogLog register for register."""
    differs = []
    if log.clicks != served.clicks:
        differs.append(f"p{partition} clicks: log {log.clicks}, served {served.clicks}")
    if log.impressions != served.impressions:
        differs.append(f"p{partition} impressions: log {log.impressions}, served {served.impressions}")
    if log.registers != served.registers:
        unequal = sum(a != b for a, b in zip(log.registers, served.registers, strict=True))
        differs.append(
            f"p{partition} uniques: {unequal} registers differ (log ~{log.uniques}, served ~{served.uniques})"
        )
    verdict = Verdict.MISMATCH if differs else Verdict.OK
    return PartitionAudit(partition, log, served, source, verdict, tuple(differs))


@dataclass(frozen=True, slots=True)
class HourAudit:
    hour: int
    parts: tuple[PartitionAudit, ...]
    why: str = ""
    """For PENDING or UNREADABLE: which partition, and why."""
    pending: bool = False
    unreadable: bool = False

    @property
    def verdict(self) -> Verdict:
        if self.unreadable:
            return Verdict.UNREADABLE
        if any(p.verdict is Verdict.MISMATCH for p in self.parts):
            return Verdict.MISMATCH  # found up to the watermarks: later events cannot mend it
        if self.pending:
            return Verdict.PENDING
        return Verdict.OK

    @property
    def differs(self) -> tuple[str, ...]:
        return tuple(d for p in self.parts for d in p.differs)

    def totals(self, side: str) -> tuple[int, int, int]:
        """(clicks, impressions, uniques) of the `log` or the `served` side: counters summed over the
        partitions, uniques the PFCOUNT-like estimate of the union of their registers."""
        counted = [getattr(p, side) for p in self.parts]
        union = hll.merge(c.registers for c in counted) if counted else EMPTY.registers
        return sum(c.clicks for c in counted), sum(c.impressions for c in counted), hll.count(union)

    def line(self) -> str:
        """One line: the hour, log counts, served counts, the verdict (and what differs)."""
        token = hour_token(self.hour)
        if self.unreadable:
            return f"{token}  {self.verdict.value}: {self.why}"
        lc, li, lu = self.totals("log")
        sc, si, su = self.totals("served")
        cold = sum(p.source == "snapshot" for p in self.parts)
        where = f" ({cold} partition(s) cold)" if cold else ""
        head = (
            f"{token}  log clicks={lc} impressions={li} uniques~{lu}  "
            f"served clicks={sc} impressions={si} uniques~{su}{where}  {self.verdict.value}"
        )
        if self.verdict is Verdict.PENDING:
            head += f": {self.why}"
        return head + ("".join(f"\n    {d}" for d in self.differs))
