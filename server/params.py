"""Query-string parsing shared by both HTTP paths: single-valued parameters and timestamps."""

from __future__ import annotations

from urllib.parse import parse_qsl

from contract.hours import MAX_TIMESTAMP_MS
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
