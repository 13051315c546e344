"""Query-string parsing shared by both HTTP paths and by writes and reads: single-valued parameters,
timestamps and dimensions."""

from __future__ import annotations

from difflib import get_close_matches
from urllib.parse import parse_qsl

from contract.hours import MAX_TIMESTAMP_MS
from contract.schema import DIMENSION_NAME_MAX, DIMENSION_VALUE, DIMENSION_VALUE_RULE, Dimensions
from server.failures import ParamError

MAX_FIELDS = 32


def parse_query(raw: bytes) -> dict[str, list[str]]:
    """Decode a raw query string strictly: bad percent-encoding or UTF-8 is the client's error."""
    try:
        text = raw.decode("ascii")
        pairs = parse_qsl(
            text,
            keep_blank_values=True,
            strict_parsing=False,
            encoding="utf-8",
            errors="strict",
            max_num_fields=MAX_FIELDS,
        )
    except UnicodeDecodeError as exc:
        raise ParamError("query", "is not valid percent-encoded UTF-8") from exc
    except ValueError as exc:
        raise ParamError("query", f"has more than {MAX_FIELDS} parameters") from exc
    query: dict[str, list[str]] = {}
    for key, value in pairs:
        query.setdefault(key, []).append(value)
    return query


def single(query: dict[str, list[str]], name: str) -> str | None:
    values = query.get(name)
    if values is None:
        return None
    if len(values) > 1:
        raise ParamError(name, "is given more than once")
    return values[0]


def parse_timestamp(query: dict[str, list[str]]) -> int:
    return parse_timestamp_param(query, "timestamp")


def parse_timestamp_param(query: dict[str, list[str]], name: str) -> int:
    """Milliseconds since the epoch: a plain non-negative decimal integer, nothing else."""
    raw = single(query, name)
    if raw is None:
        raise ParamError(name, "is required (milliseconds since the epoch)")
    if raw == "":
        raise ParamError(name, "is empty; expected milliseconds since the epoch")
    if raw.startswith("-") and raw[1:].isdigit() and raw[1:].isascii():
        raise ParamError(name, f"must not be negative, got {_show(raw)}")
    if not (raw.isascii() and raw.isdigit()):
        raise ParamError(name, f"must be a plain decimal integer of milliseconds, got {_show(raw)}")
    if len(raw) > 19 or int(raw) > MAX_TIMESTAMP_MS:
        raise ParamError(
            name,
            f"{_show(raw)} is out of range: at most {MAX_TIMESTAMP_MS} milliseconds since the epoch "
            "(year 9999); is it in micro- or nanoseconds?",
        )
    return int(raw)


def _show(value: str, limit: int = 40) -> str:
    shown = value if len(value) <= limit else value[:limit] + "..."
    return repr(shown)


def timestamp_only(raw: bytes) -> int | None:
    """Fast path for the common `timestamp=<digits>` query; None means "use the full parser"."""
    if raw[:10] == b"timestamp=" and 10 < len(raw) <= 29 and raw[10:].isdigit():
        value = int(raw[10:])
        if value <= MAX_TIMESTAMP_MS:
            return value
    return None


def parse_dimensions(
    query: dict[str, list[str]], dimensions: frozenset[str], own: frozenset[str] = frozenset()
) -> Dimensions:
    """The declared dimensions a query names, sorted by name: an event's, or a read's filter. A
    parameter that looks like a declared dimension mistyped (`campain`, `Site`, `creatives`) is a
    ParamError saying which one it resembles; the request's `own` parameters and other unknown ones
    (`_=123`, `utm_source`) are ignored, as pixels send them."""
    found: list[tuple[str, str]] = []
    for name in query:
        if name in dimensions:
            value = single(query, name)
            assert value is not None
            if not DIMENSION_VALUE.fullmatch(value):
                raise ParamError(name, f"{DIMENSION_VALUE_RULE}, got {value[:70]!r}")
            found.append((name, value))
        elif name not in own and (like := resembles(name, dimensions)) is not None:
            declared = ", ".join(sorted(dimensions))
            raise ParamError(
                name, f"is not a declared dimension; did you mean {like}? (ANALYTICS_DIMENSIONS: {declared})"
            )
    return tuple(sorted(found))


def resembles(name: str, dimensions: frozenset[str]) -> str | None:
    """The declared dimension `name` looks like a mistyping of, if any: the same but for case, or
    close in spelling (difflib's ratio of at least 0.8: `campain`, `sites`, not `size` for `site`)."""
    if len(name) > 2 * DIMENSION_NAME_MAX:
        return None
    lowered = name.lower()
    if lowered in dimensions:
        return lowered
    close = get_close_matches(lowered, sorted(dimensions), n=1, cutoff=0.8)
    return close[0] if close else None
