"""Counts unique users in Redis HyperLogLogs read as raw bytes, alone or in unions, just as PFCOUNT does;
and builds the registers PFADD would give a set of users (the audit recounts sketches from the log).

Redis's own PFCOUNT cannot count these: a cold hour's registers come from its snapshot entry in NATS,
not from Redis, and writing them into Redis to count them would make the read side (the `api` role,
read-only) a writer; nor can the audit, which writes only its own results.
`tests/integration/test_hll_matches_redis.py` holds every count to PFCOUNT's and
`tests/integration/test_sketch_matches_pfadd.py` every sketch to PFADD's."""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable

__all__ = ["REGISTERS", "cardinality", "count", "merge", "registers", "sketch"]

REGISTERS = 16384

_HEADER = 16
_DENSE_SIZE = _HEADER + REGISTERS * 6 // 8
_Q = 64 - 14  # hash bits left after the 14 index bits: registers top out at _Q + 1
_ALPHA_INF = 0.721347520444481703680
_EMPTY = bytes(REGISTERS)
_WORDS = struct.Struct("<Q")

# Dense registers are 6 bits wide, packed least significant bit first: 3 bytes hold 4 registers.
_LOW6 = bytes(b & 0x3F for b in range(256))
_HIGH2 = bytes(b >> 6 for b in range(256))
_LOW4_UP2 = bytes((b & 0x0F) << 2 for b in range(256))
_HIGH4 = bytes(b >> 4 for b in range(256))
_LOW2_UP4 = bytes((b & 0x03) << 4 for b in range(256))
_HIGH6 = bytes(b >> 2 for b in range(256))


def _lanes(word: int) -> int:
    """A 64-bit pattern repeated across all registers, one byte per register."""
    return int.from_bytes(word.to_bytes(8, "little") * (REGISTERS // 8), "little")


_ABOVE_63 = _lanes(0xC0C0C0C0C0C0C0C0)
# Registers are at most 63, so the top bit of every byte lane is free for SWAR.
_TOPS = _lanes(0x8080808080808080)
# Delta swaps that transpose every 8x8 bit block: 8 registers by 8 bits become 8 bit planes by 8 registers.
_TRANSPOSE = (
    (7, _lanes(0x00AA00AA00AA00AA)),
    (14, _lanes(0x0000CCCC0000CCCC)),
    (28, _lanes(0x00000000F0F0F0F0)),
)
_EVERY_REGISTER = (1 << REGISTERS) - 1


def registers(raw: bytes) -> bytes:
    """The 16384 registers of a HyperLogLog string, one per byte; b"" (a missing key) is an empty sketch."""
    if not raw:
        return _EMPTY
    if len(raw) < _HEADER:
        raise ValueError(f"HyperLogLog string is {len(raw)} bytes, shorter than its {_HEADER}-byte header")
    if raw[:4] != b"HYLL":
        raise ValueError(f"not a HyperLogLog string: magic is {raw[:4]!r}, not b'HYLL'")
    encoding = raw[4]
    if encoding == 0:
        return _dense(raw)
    if encoding == 1:
        return _sparse(raw)
    raise ValueError(f"unknown HyperLogLog encoding {encoding} (0 is dense, 1 is sparse)")


def _or(a: bytes, b: bytes) -> bytes:
    return (int.from_bytes(a, "little") | int.from_bytes(b, "little")).to_bytes(len(a), "little")


def _dense(raw: bytes) -> bytes:
    if len(raw) != _DENSE_SIZE:
        raise ValueError(f"dense HyperLogLog string is {len(raw)} bytes, not {_DENSE_SIZE}")
    b0, b1, b2 = raw[_HEADER::3], raw[_HEADER + 1 :: 3], raw[_HEADER + 2 :: 3]
    out = bytearray(REGISTERS)
    out[0::4] = b0.translate(_LOW6)
    out[1::4] = _or(b0.translate(_HIGH2), b1.translate(_LOW4_UP2))
    out[2::4] = _or(b1.translate(_HIGH4), b2.translate(_LOW2_UP4))
    out[3::4] = b2.translate(_HIGH6)
    return bytes(out)


def _sparse(raw: bytes) -> bytes:
    out = bytearray(REGISTERS)
    index, at, end = 0, _HEADER, len(raw)
    while at < end:
        op = raw[at]
        if op & 0x80:  # VAL 1vvvvvxx: 1-4 registers holding 1-32
            run, value = (op & 0x03) + 1, ((op >> 2) & 0x1F) + 1
            at += 1
        elif op & 0x40:  # XZERO 01xxxxxx yyyyyyyy: 1-16384 zero registers
            if at + 1 >= end:
                raise ValueError(f"sparse HyperLogLog string ends inside an XZERO opcode at byte {at}")
            run, value = ((op & 0x3F) << 8 | raw[at + 1]) + 1, 0
            at += 2
        else:  # ZERO 00xxxxxx: 1-64 zero registers
            run, value = op + 1, 0
            at += 1
        if index + run > REGISTERS:
            raise ValueError(f"sparse HyperLogLog opcodes run past {REGISTERS} registers")
        if value:
            out[index : index + run] = bytes((value,)) * run
        index += run
    if index != REGISTERS:
        raise ValueError(f"sparse HyperLogLog opcodes cover {index} registers, not {REGISTERS}")
    return bytes(out)


def merge(many: Iterable[bytes]) -> bytes:
    """Register-wise maximum of register arrays from `registers`: the sketch of the union."""
    best: int | None = None
    for regs in many:
        if len(regs) != REGISTERS:
            raise ValueError(f"register array is {len(regs)} bytes, not {REGISTERS}")
        other = int.from_bytes(regs, "little")
        if other & _ABOVE_63:
            raise ValueError("register array holds a value above 63, so it is not from registers()")
        if best is None:
            best = other
            continue
        # Per byte lane: the top bit of (best + 128 - other) says best >= other; no lane borrows.
        ge = ((best | _TOPS) - other) & _TOPS
        best = other ^ ((best ^ other) & (ge - (ge >> 7)))
    return _EMPTY if best is None else best.to_bytes(REGISTERS, "little")


def _sigma(x: float) -> float:
    if x == 1.0:
        return math.inf
    y, z = 1.0, x
    while True:
        x *= x
        previous = z
        z += x * y
        y += y
        if previous == z:
            return z


def _tau(x: float) -> float:
    if x in (0.0, 1.0):
        return 0.0
    y, z = 1.0, 1.0 - x
    while True:
        x = math.sqrt(x)
        previous = z
        y *= 0.5
        z -= (1.0 - x) ** 2 * y
        if previous == z:
            return z / 3.0


def _histogram(regs: bytes) -> list[int]:
    """How many registers hold each value 0-63 (bytes.count per value is 4x slower)."""
    x = int.from_bytes(regs, "little")
    if x & _ABOVE_63:
        raise ValueError("register array holds a value above 63, so it is not from registers()")
    for shift, mask in _TRANSPOSE:
        swap = (x ^ (x >> shift)) & mask
        x ^= swap ^ (swap << shift)
    spread = x.to_bytes(REGISTERS, "little")
    # Split the set of all registers by one bit plane at a time, high bit first: the leaves are values.
    groups = [_EVERY_REGISTER]
    for bit in range(5, -1, -1):
        plane = int.from_bytes(spread[bit::8], "little")
        split: list[int] = []
        for group in groups:
            ones = group & plane
            split += (group ^ ones, ones)
        groups = split
    return [group.bit_count() for group in groups]


def count(regs: bytes) -> int:
    """Estimated distinct elements behind a register array, to the unit what Redis's hllCount returns."""
    if len(regs) != REGISTERS:
        raise ValueError(f"register array is {len(regs)} bytes, not {REGISTERS}")
    m = float(REGISTERS)
    histogram = _histogram(regs)
    # Values above _Q + 1 come from no hash; like Redis, count them only as "neither 0 nor _Q + 1".
    z = m * _tau((m - histogram[_Q + 1]) / m)
    for j in range(_Q, 0, -1):
        z += histogram[j]
        z *= 0.5
    z += m * _sigma(histogram[0] / m)
    if z == 0.0:
        # Every register is 51 or more (no real sketch): Redis replies llroundl(inf), undefined in C.
        raise ValueError("every register is saturated, so the estimate is unbounded")
    estimate = _ALPHA_INF * m * m / z
    whole = math.floor(estimate)
    return whole + 1 if estimate - whole >= 0.5 else whole  # llroundl: halves away from zero


def cardinality(raws: Iterable[bytes]) -> int:
    """Distinct elements in the union of HyperLogLog strings, as PFCOUNT of their keys gives."""
    return count(merge(registers(raw) for raw in raws))


_M = 0xC6A4A7935BD1E995
_MASK64 = (1 << 64) - 1
_SEED = 0xADC83B19  # the seed Redis's hllPatLen gives MurmurHash64A


def _murmur64a(data: bytes) -> int:
    """Redis's MurmurHash64A (little-endian), the hash PFADD puts each element through."""
    length = len(data)
    h = (_SEED ^ (length * _M)) & _MASK64
    whole = length - length % 8
    for (k,) in _WORDS.iter_unpack(data[:whole]):
        k = (k * _M) & _MASK64
        k ^= k >> 47
        h = ((h ^ ((k * _M) & _MASK64)) * _M) & _MASK64
    tail = data[whole:]
    if tail:
        h = ((h ^ int.from_bytes(tail, "little")) * _M) & _MASK64
    h ^= h >> 47
    h = (h * _M) & _MASK64
    return h ^ (h >> 47)


def sketch(users: Iterable[str]) -> bytes:
    """The registers (as `registers` gives them) of a HyperLogLog after PFADD of `users`."""
    out = bytearray(REGISTERS)
    for user in users:
        h = _murmur64a(user.encode())
        index = h & (REGISTERS - 1)
        rest = (h >> 14) | (1 << _Q)
        rank = (rest & -rest).bit_length()  # 1 + trailing zeros, as hllPatLen counts
        if rank > out[index]:
            out[index] = rank
    return bytes(out)
