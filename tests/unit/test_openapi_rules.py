"""The OpenAPI document's patterns and the ingest rules they describe agree: what the document allows,
ingest accepts, and ingest refuses nothing the document allows but for the byte limit it states."""

from __future__ import annotations

import re

from hypothesis import example, given
from hypothesis import strategies as st
from litestar.openapi.spec import Schema

from contract.schema import MAX_KEY_CHARS, MAX_USER_BYTES, key_problem, user_problem
from server.openapi import IDEMPOTENCY_KEY, USER


def allows(schema: Schema, value: str) -> bool:
    if schema.any_of:
        return any(allows(branch, value) for branch in schema.any_of if isinstance(branch, Schema))
    assert schema.pattern is not None
    assert schema.max_length is not None
    # ECMA-262, as OpenAPI reads patterns: `$` is the end of the text (Python's also matches before a
    # final newline).
    ecma = schema.pattern.removesuffix("$") + r"\Z"
    return len(value) <= schema.max_length and re.search(ecma, value) is not None


@given(st.text(max_size=300) | st.text(st.characters(max_codepoint=0x7F), max_size=300))
@example(" ")
@example("0\n")
@example("\u00a0x")
@example("a\x85")
@example("é" * 64)
@example("é" * 129)
@example("x" * MAX_USER_BYTES)
def test_the_documented_user_is_exactly_the_accepted_one_up_to_the_stated_byte_limit(user: str) -> None:
    accepted = user_problem(user) is None
    if allows(USER, user):
        assert accepted
    elif accepted:  # the prose's case: long non-ASCII names that still fit in the byte limit
        assert not user.isascii()
        assert len(user) > MAX_USER_BYTES // 4
        assert len(user.encode()) <= MAX_USER_BYTES


@given(st.text(st.characters(max_codepoint=0xFF), max_size=MAX_KEY_CHARS + 2))
@example(" a")
@example("a ")
@example("~" * MAX_KEY_CHARS)
def test_the_documented_key_is_an_accepted_one_without_spaces_at_its_ends(key: str) -> None:
    if allows(IDEMPOTENCY_KEY, key):
        assert key_problem(key) is None
    elif key_problem(key) is None:
        assert key != key.strip(" ")  # HTTP strips those
