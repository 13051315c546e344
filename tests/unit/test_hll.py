"""Decoding and counting Redis HyperLogLog strings in Python, checked against hand-built sketches."""

from __future__ import annotations

import itertools
import math
import random
from decimal import ROUND_HALF_UP, Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from contract.hll import REGISTERS, cardinality, count, merge, registers

EMPTY = bytes(REGISTERS)


def dense(values: list[int]) -> bytes:
    """A dense HyperLogLog string: each 4 registers of 6 bits in 3 bytes, least significant bits first."""
    packed = bytearray()
    for i in range(0, REGISTERS, 4):
        r0, r1, r2, r3 = values[i : i + 4]
        packed += (r0 | r1 << 6 | r2 << 12 | r3 << 18).to_bytes(3, "little")
    return b"HYLL\x00" + bytes(11) + bytes(packed)


def sparse(opcodes: list[int]) -> bytes:
    return b"HYLL\x01" + bytes(11) + bytes(opcodes)


def xzero(run: int) -> list[int]:
    return [0x40 | (run - 1) >> 8, (run - 1) & 0xFF]


def val(value: int, run: int) -> int:
    return 0x80 | (value - 1) << 2 | (run - 1)


def to_sparse(values: bytes) -> bytes:
    """The sparse string for registers of at most 32, in maximal runs as Redis writes them."""
    opcodes: list[int] = []
    for value, same in itertools.groupby(values):
        run = sum(1 for _ in same)
        while run:
            if value:
                step = min(run, 4)
                opcodes.append(val(value, step))
            elif run > 64:
                step = run
                opcodes += xzero(step)
            else:
                step = run
                opcodes.append(step - 1)
            run -= step
    return sparse(opcodes)


def hllcount(regs: bytes) -> int:
    """Redis's hllCount, transcribed line by line: the slow reference for `count`."""
    m = float(REGISTERS)
    reghisto = [regs.count(v) for v in range(64)]

    def sigma(x: float) -> float:
        if x == 1.0:
            return math.inf
        y, z = 1.0, x
        while True:
            x *= x
            z_prime = z
            z += x * y
            y += y
            if z_prime == z:
                return z

    def tau(x: float) -> float:
        if x in (0.0, 1.0):
            return 0.0
        y, z = 1.0, 1 - x
        while True:
            x = math.sqrt(x)
            z_prime = z
            y *= 0.5
            z -= math.pow(1 - x, 2) * y
            if z_prime == z:
                return z / 3

    z = m * tau((m - reghisto[51]) / m)
    for j in range(50, 0, -1):
        z += reghisto[j]
        z *= 0.5
    z += m * sigma(reghisto[0] / m)
    e = 0.721347520444481703680 * m * m / z
    return int(Decimal(e).quantize(Decimal(1), rounding=ROUND_HALF_UP))  # llroundl


@st.composite
def register_arrays(draw: st.DrawFn, top: int = 51) -> bytes:
    """Few set registers (as from a sparse sketch) or all of them, shaped like real hashes' runs of zeros."""
    if draw(st.booleans()):
        cells = draw(st.dictionaries(st.integers(0, REGISTERS - 1), st.integers(1, top), max_size=64))
        out = bytearray(REGISTERS)
        for i, value in cells.items():
            out[i] = value
        return bytes(out)
    noise = random.Random(draw(st.integers(0, 2**32))).randbytes(REGISTERS)
    floor = draw(st.integers(0, 20))
    # A random byte's count of trailing zeros is geometric, as a hash's run of zeros is.
    runs = bytes(min(top, floor + 1 + ((b & -b).bit_length() - 1 if b else 8)) for b in range(256))
    return noise.translate(runs)


# --- decoding -------------------------------------------------------------------------------------------


def test_a_missing_key_counts_zero_users() -> None:
    assert registers(b"") == EMPTY
    assert count(registers(b"")) == 0
    assert cardinality([b""]) == 0
    assert cardinality([]) == 0


def test_a_fresh_sketch_from_pfadd_is_one_xzero_and_counts_zero() -> None:
    fresh = sparse(xzero(REGISTERS))
    assert fresh == b"HYLL\x01" + bytes(11) + b"\x7f\xff"
    assert registers(fresh) == EMPTY
    assert count(registers(fresh)) == 0


def test_sparse_opcodes_put_each_run_where_it_says() -> None:
    raw = sparse([9, val(3, 2), val(32, 1), *xzero(100), val(1, 4), *xzero(REGISTERS - 117)])
    regs = registers(raw)
    assert regs[10:13] == bytes([3, 3, 32])
    assert regs[113:117] == bytes([1, 1, 1, 1])
    assert regs.count(0) == REGISTERS - 7


def test_dense_registers_straddling_byte_boundaries_decode_exactly() -> None:
    # 63, 1, 62, 5 packed least significant bits first: 0b01_111111 0b1110_0000 0b000101_11
    raw = b"HYLL\x00" + bytes(11) + bytes([0x7F, 0xE0, 0x17]) + bytes(12282) + bytes([0xC0, 0x0F, 0xFC])
    regs = registers(raw)
    assert regs[:4] == bytes([63, 1, 62, 5])
    assert regs[-4:] == bytes([0, 63, 0, 63])
    assert regs[4:-4] == bytes(REGISTERS - 8)


@given(register_arrays(top=63))
def test_any_dense_string_decodes_to_the_registers_packed_into_it(regs: bytes) -> None:
    assert registers(dense(list(regs))) == regs


@settings(max_examples=40)  # sparse strings as long as these take milliseconds to build and decode
@given(register_arrays(top=32))
def test_sparse_and_dense_strings_of_the_same_registers_decode_alike(regs: bytes) -> None:
    assert registers(to_sparse(regs)) == registers(dense(list(regs))) == regs


# Answers that PFCOUNT gave for these very strings (Valkey 9.1.2, SET then PFCOUNT).
@pytest.mark.parametrize(
    ("raw", "pfcount"),
    [
        (sparse([9, val(3, 2), *xzero(REGISTERS - 12)]), 2),
        (dense([5] * (REGISTERS // 2) + [0] * (REGISTERS // 2)), 13039),
        (dense([1] * REGISTERS), 23637),
        (dense([51] * 100 + [0] * (REGISTERS - 100)), 100),
        (dense([60] * 100 + [3] * (REGISTERS - 100)), 95129),
        (dense([i % 52 for i in range(REGISTERS)]), 303516),
        (dense([i % 64 for i in range(REGISTERS)]), 375261),
    ],
    ids=["sparse-two-threes", "half-fives", "all-ones", "hundred-51s", "hundred-60s", "mod-52", "mod-64"],
)
def test_hand_built_sketches_count_what_pfcount_said(raw: bytes, pfcount: int) -> None:
    assert count(registers(raw)) == pfcount


def test_the_union_counts_what_pfcount_of_several_keys_said() -> None:
    assert cardinality([dense([i % 64 for i in range(REGISTERS)]), dense([1] * REGISTERS), b""]) == 504258


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        (b"HYLL\x01", "shorter than its 16-byte header"),
        (b"HYLX\x01" + bytes(11) + b"\x7f\xff", "magic"),
        (b"HYLL\x02" + bytes(11) + b"\x7f\xff", "unknown HyperLogLog encoding 2"),
        (dense([0] * REGISTERS)[:-1], "dense HyperLogLog string is 12303 bytes, not 12304"),
        (dense([0] * REGISTERS) + b"\x00", "dense HyperLogLog string is 12305 bytes"),
        (sparse([*xzero(REGISTERS), 0]), "run past 16384 registers"),
        (sparse([*xzero(REGISTERS - 2), val(7, 3)]), "run past 16384 registers"),
        (sparse(xzero(REGISTERS - 1)), "cover 16383 registers, not 16384"),
        (sparse([]), "cover 0 registers"),
        (sparse([*xzero(REGISTERS - 100), 0x40]), "ends inside an XZERO opcode"),
    ],
    ids=[
        "short",
        "bad-magic",
        "unknown-encoding",
        "dense-short",
        "dense-long",
        "zero-past-end",
        "val-past-end",
        "too-few",
        "no-opcodes",
        "cut-xzero",
    ],
)
def test_malformed_strings_are_refused_naming_the_problem(raw: bytes, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        registers(raw)


def test_register_arrays_of_the_wrong_shape_are_refused() -> None:
    with pytest.raises(ValueError, match="16383 bytes, not 16384"):
        count(bytes(REGISTERS - 1))
    with pytest.raises(ValueError, match="16385 bytes, not 16384"):
        merge([EMPTY, bytes(REGISTERS + 1)])
    with pytest.raises(ValueError, match="above 63"):
        count(bytes([64]) + bytes(REGISTERS - 1))
    with pytest.raises(ValueError, match="above 63"):
        merge([EMPTY, bytes(REGISTERS - 1) + b"\xff"])


def test_a_sketch_with_every_register_saturated_is_refused_rather_than_counted() -> None:
    with pytest.raises(ValueError, match="saturated"):
        count(bytes([51]) * REGISTERS)
    with pytest.raises(ValueError, match="saturated"):
        count(bytes([63]) * REGISTERS)


# --- counting and merging -------------------------------------------------------------------------------


@given(register_arrays(top=63))
def test_count_agrees_with_a_line_by_line_transcription_of_hllcount(regs: bytes) -> None:
    assert count(regs) == hllcount(regs)


@given(register_arrays(), register_arrays())
def test_merge_takes_the_larger_register_everywhere(a: bytes, b: bytes) -> None:
    assert merge([a, b]) == bytes(map(max, a, b))


@given(register_arrays(), register_arrays())
def test_merge_is_commutative(a: bytes, b: bytes) -> None:
    assert merge([a, b]) == merge([b, a])


@given(register_arrays(), register_arrays(), register_arrays())
def test_merge_is_associative(a: bytes, b: bytes, c: bytes) -> None:
    assert merge([merge([a, b]), c]) == merge([a, merge([b, c])]) == merge([a, b, c])


@given(register_arrays())
def test_merge_is_idempotent(a: bytes) -> None:
    assert merge([a, a]) == merge([a]) == a


@given(register_arrays())
def test_merging_with_an_empty_sketch_changes_nothing(a: bytes) -> None:
    assert merge([a, EMPTY]) == merge([EMPTY, a]) == a
    assert merge([]) == EMPTY


@given(register_arrays(), register_arrays())
def test_a_union_counts_at_least_as_many_users_as_either_side(a: bytes, b: bytes) -> None:
    assert count(merge([a, b])) >= max(count(a), count(b))
