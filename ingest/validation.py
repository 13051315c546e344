"""Pure validation of a POST /analytics request into an Event; the clock is passed in."""

from __future__ import annotations

from collections.abc import Iterable

from contract.hours import MAX_TIMESTAMP_MS
from contract.schema import Event, Kind, key_problem, user_problem
from server.failures import ParamError
from server.params import parse_query, parse_timestamp, single

_KINDS = {kind.value: kind for kind in Kind}


def parse_event(
    raw_query: bytes, now_ms: int, future_skew_ms: int, idempotency_key: str | None = None
) -> Event:
    """The event a POST describes, or a ParamError naming the parameter that is wrong.

    A plain query such as `timestamp=123&user=kek&click` is read without building the query dict;
    anything else (and every error) goes through the full parse below."""
    plain = _plain(raw_query, now_ms, future_skew_ms, idempotency_key)
    return plain if plain is not None else _parse_full(raw_query, now_ms, future_skew_ms, idempotency_key)


def _parse_full(raw_query: bytes, now_ms: int, future_skew_ms: int, idempotency_key: str | None) -> Event:
    query = parse_query(raw_query)
    timestamp = parse_timestamp(query)
    if timestamp > now_ms + future_skew_ms:
        raise ParamError(
            "timestamp",
            f"{timestamp} is more than {future_skew_ms} ms in the future; "
            "it must be milliseconds since the epoch (not micro- or nanoseconds)",
        )
    return Event(ts=timestamp, user=_user(query), kind=_kind(query), key=idempotency_key)


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


def _plain(raw_query: bytes, now_ms: int, future_skew_ms: int, idempotency_key: str | None) -> Event | None:
    """The event of a plain, valid query; None for anything else (encoded or unknown parameters,
    `event=`, any error), which the full parse then answers. Where this returns an event, the full
    parse returns the same one (tests/unit/test_validation.py)."""
    if len(raw_query) > 600 or not raw_query.isascii() or b"%" in raw_query or b"+" in raw_query:
        return None
    timestamp: int | None = None
    user: str | None = None
    kind: Kind | None = None
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
        else:
            return None
    if timestamp is None or user is None or kind is None:
        return None
    if timestamp > MAX_TIMESTAMP_MS or timestamp > now_ms + future_skew_ms or user_problem(user) is not None:
        return None
    return Event(ts=timestamp, user=user, kind=kind, key=idempotency_key)


_FLAGS = {kind.value.encode(): kind for kind in Kind}
