"""The one batch parser (pure): a `POST /analytics/batch` body, NDJSON or CSV, gzipped or not, read chunk
by chunk with its limits checked as it goes, into the events it holds and the lines it rejects.

Each line becomes the same parameters a single POST's query gives (`{"user": ["alice"], ...}`) and goes
through the same `event_of`, so a line and a POST obey one set of rules and say the same errors."""

from __future__ import annotations

import csv
import hashlib
import zlib
from dataclasses import dataclass, field
from typing import Any

import msgspec

from contract.hours import MAX_TIMESTAMP_MS
from contract.schema import DIMENSION_VALUE, MAX_KEY_CHARS, Event, Kind, key_problem, user_problem
from ingest.validation import event_of
from server.failures import ParamError

NDJSON = "application/x-ndjson"
CSV = "text/csv"
MEDIA_TYPES = (NDJSON, CSV)
KINDS = {kind.value: kind for kind in Kind}
CSV_COLUMNS = ("timestamp", "user", "event")
"""The columns a CSV header must name; `key` and the declared dimensions may follow, in any order."""


class TooLarge(Exception):
    """The body passed a limit (answered 413); `setting` names the limit."""

    def __init__(self, setting: str, detail: str) -> None:
        super().__init__(detail)
        self.setting = setting


class Rejected(msgspec.Struct, frozen=True):
    line: int
    """1-based, counted over the decompressed body (a CSV header is line 1)."""
    error: str


@dataclass(frozen=True, slots=True)
class LineRules:
    """What a line is checked against: the clock and skew of a POST, the declared dimensions, and the
    batch's Idempotency-Key, from which each line without its own key derives one."""

    now_ms: int
    future_skew_ms: int
    dimensions: frozenset[str]
    batch_key: str | None = None

    def derived_key(self, line: int) -> str:
        """The key of line `line` of a batch sent with `batch_key`: the same on every retry."""
        assert self.batch_key is not None
        key = f"{self.batch_key}/{line}"
        if len(key) <= MAX_KEY_CHARS:
            return key
        return f"{hashlib.sha256(self.batch_key.encode()).hexdigest()[:64]}/{line}"


@dataclass(slots=True)
class BatchLines:
    """What a body holds: the events to store, in line order, the lines refused, and how many lines
    repeated the user and key of an earlier line of the same batch (which would not count again)."""

    events: list[Event] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    duplicates: int = 0


class BatchReader:
    """Feed it the body's chunks as they arrive, then `finish`. Raises TooLarge past a limit, and a
    ParamError naming `body` and the line for a body that is not what its Content-Type says."""

    def __init__(self, media: str, gzipped: bool, max_bytes: int, max_events: int, rules: LineRules) -> None:
        self._csv = media == CSV
        self._inflate = zlib.decompressobj(wbits=31) if gzipped else None
        self._max_bytes = max_bytes
        self._max_events = max_events
        self._rules = rules
        self._read = 0
        self._pending = b""
        self._line = 0
        self._header: list[str] | None = None
        self._seen: set[tuple[str, str]] = set()
        self._lines = 0
        self.out = BatchLines()

    def feed(self, chunk: bytes) -> None:
        if self._inflate is None:
            self._take(chunk)
            return
        data = chunk
        while data:
            try:
                # At most one byte past the limit comes out at once: a gzip bomb is stopped early.
                out = self._inflate.decompress(data, self._max_bytes - self._read + 1)
            except zlib.error as exc:
                raise ParamError("body", f"is not valid gzip ({exc})") from None
            self._take(out)
            data = self._inflate.unconsumed_tail
            if self._inflate.eof and self._inflate.unused_data:
                raise ParamError("body", "has data after the end of its gzip stream")

    def finish(self) -> BatchLines:
        if self._inflate is not None and not self._inflate.eof:
            raise ParamError("body", "ends in the middle of its gzip stream")
        if self._pending:
            self._one(self._pending)
            self._pending = b""
        if self._lines == 0:
            raise ParamError("body", "holds no events; send one event per line")
        return self.out

    def _take(self, data: bytes) -> None:
        self._read += len(data)
        if self._read > self._max_bytes:
            raise TooLarge(
                "ANALYTICS_BATCH_MAX_BYTES",
                f"body: more than {self._max_bytes} bytes (after decompression); "
                "split the batch (ANALYTICS_BATCH_MAX_BYTES)",
            )
        lines = (self._pending + data).split(b"\n")
        self._pending = lines.pop()
        for raw in lines:
            self._one(raw)

    def _one(self, raw: bytes) -> None:
        self._line += 1
        line = self._line
        try:
            text = raw.decode().removesuffix("\r")
        except UnicodeDecodeError:
            raise ParamError("body", f"line {line} is not UTF-8") from None
        if not text.strip():
            return
        if self._csv and self._header is None:
            self._header = _csv_header(text, line)
            return
        self._lines += 1
        if self._lines > self._max_events:
            raise TooLarge(
                "ANALYTICS_BATCH_MAX_EVENTS",
                f"body: more than {self._max_events} events; split the batch (ANALYTICS_BATCH_MAX_EVENTS)",
            )
        decoded = _json_object(text, line) if self._header is None else None  # else a 400: not NDJSON
        if decoded is not None and (event := _plain(decoded, self._rules, line)) is not None:
            self._keep(event)
            return
        try:
            fields = _csv_fields(self._header, text) if self._header is not None else _json_fields(decoded)
            self._keep(self._event(fields, line))
        except ParamError as exc:
            self.out.rejected.append(Rejected(line, str(exc)))

    def _event(self, fields: dict[str, list[str]], line: int) -> Event:
        rules = self._rules
        key = fields.pop("key", [""])[0]
        if key:
            problem = key_problem(key)
            if problem is not None:
                raise ParamError("key", problem)
        elif rules.batch_key is not None:
            key = rules.derived_key(line)
        return event_of(fields, rules.now_ms, rules.future_skew_ms, key or None, rules.dimensions)

    def _keep(self, event: Event) -> None:
        """The event, unless an earlier line had its user and key."""
        if event.key is not None:
            seen = (event.user, event.key)
            if seen in self._seen:
                self.out.duplicates += 1
                return
            self._seen.add(seen)
        self.out.events.append(event)


def _plain(line_fields: dict[str, Any], rules: LineRules, line: int) -> Event | None:
    """The event of a plain, valid NDJSON line (an integer timestamp, `event`, declared dimensions and
    nothing else); None for anything else, which the full parse then answers. Where this returns an
    event, the full parse returns the same one (tests/unit/test_batch_body.py)."""
    fields = dict(line_fields)
    ts, user, kind, key = (
        fields.pop("timestamp", None),
        fields.pop("user", None),
        fields.pop("event", None),
        fields.pop("key", None),
    )
    if type(ts) is not int or not 0 <= ts <= MAX_TIMESTAMP_MS or ts > rules.now_ms + rules.future_skew_ms:
        return None
    if type(user) is not str or user_problem(user) is not None or type(kind) is not str or kind not in KINDS:
        return None
    if key is None or key == "":
        key = rules.derived_key(line) if rules.batch_key is not None else None
    elif type(key) is not str or key_problem(key) is not None:
        return None
    dims = rules.dimensions
    for name, value in fields.items():
        if name not in dims or type(value) is not str or not DIMENSION_VALUE.fullmatch(value):
            return None
    return Event(ts, user, KINDS[kind], key, tuple(sorted(fields.items())) if fields else ())


def _json_object(text: str, line: int) -> dict[str, Any]:
    try:
        decoded = msgspec.json.decode(text)
    except msgspec.DecodeError as exc:
        raise ParamError("body", f"line {line} is not JSON ({exc}); send one JSON object per line") from None
    if not isinstance(decoded, dict):
        raise ParamError("body", f"line {line} is not a JSON object; send one JSON object per line")
    return decoded


def _json_fields(decoded: dict[str, Any] | None) -> dict[str, list[str]]:
    assert decoded is not None
    fields: dict[str, list[str]] = {}
    for name, value in decoded.items():
        if value is None:
            continue
        if isinstance(value, str):
            fields[name] = [value]
        elif isinstance(value, int) and not isinstance(value, bool):
            fields[name] = [str(value)]
        else:
            raise ParamError(name, f"must be a string or an integer, got {type(value).__name__}")
    return fields


def _csv_header(text: str, line: int) -> list[str]:
    names = [name.strip() for name in next(csv.reader([text]))]
    missing = [name for name in CSV_COLUMNS if name not in names]
    if missing:
        raise ParamError(
            "body",
            f"line {line}: the CSV header must name the columns {', '.join(CSV_COLUMNS)} "
            f"(missing: {', '.join(missing)})",
        )
    if len(set(names)) != len(names):
        raise ParamError("body", f"line {line}: the CSV header names a column twice")
    return names


def _csv_fields(header: list[str], text: str) -> dict[str, list[str]]:
    cells = next(csv.reader([text]))
    if len(cells) != len(header):
        raise ParamError("line", f"has {len(cells)} cells; the header names {len(header)} columns")
    return {name: [cell] for name, cell in zip(header, cells, strict=True) if cell != ""}
