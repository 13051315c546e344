"""Pure validation of a POST /analytics request into an Event; the clock is passed in."""

from __future__ import annotations

from collections.abc import Iterable
from itertools import pairwise

from contract.hours import MAX_TIMESTAMP_MS
from contract.schema import (
    DIMENSION_VALUE,
    Event,
    Kind,
    key_problem,
    user_problem,
)
from server.failures import ParamError
from server.params import parse_dimensions, parse_query, parse_timestamp, single

_KINDS = {kind.value: kind for kind in Kind}
EVENT_PARAMS = frozenset({"timestamp", "user", "event", *_KINDS})
"""The parameters of a POST besides the declared dimensions."""


def parse_event(
    raw_query: bytes,
    now_ms: int,
    future_skew_ms: int,
    idempotency_key: str | None = None,
    dimensions: frozenset[str] = frozenset(),
) -> Event:
    """The event a POST describes, or a ParamError naming the parameter that is wrong. `dimensions`
    are the declared ones (ANALYTICS_DIMENSIONS): any other parameter named like one is an error.

    A plain query such as `timestamp=123&user=kek&click&campaign=x` is read without building the query
    dict; anything else (and every error) goes through the full parse below."""
    plain = _plain(raw_query, now_ms, future_skew_ms, idempotency_key, dimensions)
    if plain is not None:
        return plain
    query = parse_query(raw_query)
    return event_of(query, now_ms, future_skew_ms, idempotency_key, dimensions)


def event_of(
    query: dict[str, list[str]], now_ms: int, future_skew_ms: int, key: str | None, dimensions: frozenset[str]
) -> Event:
    """The event of parsed parameters (a POST's query, or a line of a batch in the same shape), or a
    ParamError naming the one that is wrong."""
    timestamp = parse_timestamp(query)
    if timestamp > now_ms + future_skew_ms:
        raise ParamError(
            "timestamp",
            f"{timestamp} is more than {future_skew_ms} ms in the future; "
            "it must be milliseconds since the epoch (not micro- or nanoseconds)",
        )
    user, kind = _user(query), _kind(query)
    dims = parse_dimensions(query, dimensions, EVENT_PARAMS)
    return Event(ts=timestamp, user=user, kind=kind, key=key, dims=dims)


def _user(query: dict[str, list[str]]) -> str:
    user = single(query, "user")
    if user is None:
        raise ParamError("user", "is required")
    problem = user_problem(user)
    if problem is not None:
        raise ParamError("user", problem)
    return user


def _kind(query: dict[str, list[str]]) -> Kind:
    named: set[Kind] = set()
    for kind in Kind:
        flag = single(query, kind.value)
        if flag is None:
            continue
        if flag != "":
            raise ParamError(kind.value, f"is a flag and takes no value, got {flag!r}")
        named.add(kind)
    event = single(query, "event")
    if event is not None:
        if event not in _KINDS:
            raise ParamError("event", f"must be 'click' or 'impression', got {event[:40]!r}")
        named.add(_KINDS[event])
    if not named:
        raise ParamError("event", "is missing: add &click or &impression (or event=click|impression)")
    if len(named) > 1:
        raise ParamError("event", "names both click and impression; send one event per request")
    return named.pop()


def idempotency_key(headers: Iterable[tuple[bytes, bytes]]) -> str | None:
    """The request's Idempotency-Key, read from the raw ASGI headers (Litestar's Headers cost more here)."""
    found: str | None = None
    for name, value in headers:
        if name == b"idempotency-key":
            if found is not None:
                raise ParamError("Idempotency-Key", "is given more than once")
            found = value.decode("latin-1")
    return None if found is None else parse_idempotency_key(found)


def parse_idempotency_key(value: str | None) -> str | None:
    """The Idempotency-Key header: 1 to 128 printable ASCII characters."""
    if value is None:
        return None
    problem = key_problem(value)
    if problem is not None:
        raise ParamError("Idempotency-Key", problem)
    return value


def _plain(
    raw_query: bytes, now_ms: int, future_skew_ms: int, key: str | None, dimensions: frozenset[str]
) -> Event | None:
    """The event of a plain, valid query; None for anything else (encoded or unknown parameters,
    `event=`, any error), which the full parse then answers. Where this returns an event, the full
    parse returns the same one (tests/unit/test_validation.py)."""
    if len(raw_query) > 600 or not raw_query.isascii() or b"%" in raw_query or b"+" in raw_query:
        return None
    timestamp: int | None = None
    user: str | None = None
    kind: Kind | None = None
    dims: list[tuple[str, str]] | None = None
    for part in raw_query.split(b"&"):
        name, _, value = part.partition(b"=")
        if name == b"timestamp" and timestamp is None:
            if not (0 < len(value) <= 19 and value.isdigit()):
                return None
            timestamp = int(value)
        elif name == b"user" and user is None:
            user = value.decode("ascii")
        elif name in _FLAGS and kind is None and not value:
            kind = _FLAGS[name]
        elif (dim := name.decode()) in dimensions and DIMENSION_VALUE.fullmatch(text := value.decode()):
            dims = [(dim, text)] if dims is None else [*dims, (dim, text)]
        else:
            return None
    if timestamp is None or user is None or kind is None:
        return None
    if timestamp > MAX_TIMESTAMP_MS or timestamp > now_ms + future_skew_ms or user_problem(user) is not None:
        return None
    if dims is None:
        return Event(timestamp, user, kind, key)
    dims.sort()
    if any(a[0] == b[0] for a, b in pairwise(dims)):
        return None  # a dimension given twice: the full parse says so
    return Event(timestamp, user, kind, key, tuple(dims))


_FLAGS = {kind.value.encode(): kind for kind in Kind}
