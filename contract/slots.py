"""Redis Cluster hash slots of keys and of partitions, and partitions' shares of the slot space."""

from __future__ import annotations

SLOTS = 16384
"""Hash slots of a Redis Cluster (Valkey's too)."""


def _crc16_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
        table.append(crc & 0xFFFF)
    return tuple(table)


_TABLE = _crc16_table()


def crc16(data: bytes) -> int:
    """CRC16/XMODEM, the checksum Redis Cluster hashes keys with."""
    crc = 0
    for byte in data:
        crc = ((crc << 8) & 0xFFFF) ^ _TABLE[((crc >> 8) ^ byte) & 0xFF]
    return crc


def key_slot(key: str | bytes) -> int:
    """The slot of a key: of the text between the first `{` and the next `}` when that is not empty."""
    raw = key.encode() if isinstance(key, str) else key
    start = raw.find(b"{")
    if start >= 0:
        end = raw.find(b"}", start + 1)
        if end > start + 1:
            raw = raw[start + 1 : end]
    return crc16(raw) % SLOTS


def partition_tag(partition: int) -> str:
    """The hash tag every key of a partition carries (between braces)."""
    return f"p{partition}"


def partition_slot(partition: int) -> int:
    return key_slot("{" + partition_tag(partition) + "}")


def slot_ranges(partitions: int, primaries: int) -> list[tuple[int, int]]:
    """0..16383 cut into `primaries` contiguous inclusive ranges, each holding as equal a share of the
    partitions' slots as possible (the first ones get one more when they do not divide evenly); with
    fewer partitions than primaries, the last primaries share the slots after the last partition."""
    if primaries < 1 or partitions < 1:
        raise ValueError("a cluster needs at least one primary and one partition")
    slots = sorted({partition_slot(p) for p in range(partitions)})
    groups = min(primaries, len(slots))
    base, extra = divmod(len(slots), groups)
    ends: list[int] = []
    taken = 0
    for i in range(groups - 1):
        taken += base + (1 if i < extra else 0)
        ends.append((slots[taken - 1] + slots[taken]) // 2)  # halfway to the next group's first slot
    empty = primaries - groups
    tail_start = slots[-1] + 1 if empty else SLOTS
    if SLOTS - tail_start < empty:
        raise ValueError(f"no room after slot {slots[-1]} for {empty} primaries without partitions")
    ends.append(tail_start - 1)
    for i in range(empty):
        ends.append(tail_start - 1 + (SLOTS - tail_start) * (i + 1) // empty)
    starts = [0, *(end + 1 for end in ends[:-1])]
    return list(zip(starts, ends, strict=True))


def partitions_in(first: int, last: int, partitions: int) -> list[int]:
    """The partitions whose slot lies in `first..last`."""
    return [p for p in range(partitions) if first <= partition_slot(p) <= last]
