"""schemathesis hooks (loaded through SCHEMATHESIS_HOOKS) for the rules the OpenAPI document states in
prose because JSON Schema cannot: a POST's timestamp is at most the future skew ahead of the server's
clock; a range lies within the bucket limit (in a local zone, also where the zone's offset is on a
quarter-hour; a `to` at or before `from` is an empty range, answered as such); a read filters by one
dimension at a time (a range in a zone only where its hours or days start on UTC hours); a breakdown
covers one timestamp's hour or a period of at most 744 hours (or 31 local days, in a zone whose days
start on UTC hours), filtered only by the first dimension of a declared pair with `by`. A
schema-valid case that breaks one is moved inside it (it stays schema-valid), and ranges are kept to
a day's worth of buckets so the run stays short; everything else is sent as generated."""

from __future__ import annotations

import csv
import io
import json
import os
import time
from typing import Any

import schemathesis

from api.breakdown import parse_breakdown
from api.ranges import parse_range, parse_range_read
from contract.buckets import split_hours
from contract.hours import HOUR_MS, MAX_TIMESTAMP_MS
from deploy.settings import Settings
from server.failures import ParamError

SKEW_ENV = "HOURGLASS_ST_FUTURE_SKEW_MS"
BUCKETS_ENV = "HOURGLASS_ST_RANGE_MAX_BUCKETS"
RANGE_BUCKETS = 24
DIMENSIONS = frozenset(Settings().dimension_names)
PAIRS = frozenset(Settings().dimension_pair_names)
SPLIT = split_hours(Settings().day_phases)
MODERN_MS = 1_700_000_000_000


def _int(value: Any) -> int | None:
    text = str(value)
    return int(text) if text.isascii() and text.isdigit() and int(text) <= MAX_TIMESTAMP_MS else None


@schemathesis.hook
def before_call(ctx: Any, case: Any, **kwargs: Any) -> None:
    mend(case)


@schemathesis.hook
def filter_case(ctx: Any, case: Any) -> bool:
    """A batch's lines that break the schema are refused one by one in its 200 (`rejected`), by
    contract, so schema-violating batches are not expected to be 4xx: only valid ones are sent."""
    if case.path == "/analytics/batch" and case.meta is not None:
        return bool(case.meta.generation.mode.is_positive)
    return True


@schemathesis.serializer("application/x-ndjson")
def ndjson(ctx: Any, value: Any) -> bytes:
    """The lines a batch's array of events stands for, one JSON object a line."""
    lines = value if isinstance(value, list) else [value]
    return b"".join(json.dumps(line).encode() + b"\n" for line in lines)


@schemathesis.serializer("text/csv")
def csv_lines(ctx: Any, value: Any) -> bytes:
    """The same as CSV: a header naming every field the lines use, then a row a line."""
    lines = value if isinstance(value, list) else [value]
    columns = ["timestamp", "user", "event"]
    columns += sorted({name for line in lines if isinstance(line, dict) for name in line} - set(columns))
    out = io.StringIO()
    rows = csv.writer(out, lineterminator="\n")
    rows.writerow(columns)
    for line in lines:
        fields = line if isinstance(line, dict) else {}
        rows.writerow([fields.get(name, "") for name in columns])
    return out.getvalue().encode()


def _in_skew(value: Any) -> Any:
    """A timestamp no later than the skew allows: now, when it would be later."""
    ts = _int(value)
    now = int(time.time() * 1000)
    return now if ts is not None and ts > now + int(os.environ.get(SKEW_ENV, "0")) else value


def mend(case: Any) -> Any:
    """The case, with a positive one moved inside the rules above (in place; returned for `map`)."""
    if case.meta is None or not case.meta.generation.mode.is_positive:
        return case
    if case.method.upper() == "POST" and case.path == "/analytics/batch":
        for line in case.body if isinstance(case.body, list) else []:
            if isinstance(line, dict):
                line["timestamp"] = _in_skew(line.get("timestamp"))
    elif case.method.upper() == "POST" and case.path == "/analytics" and case.query:
        if "timestamp" in case.query:
            case.query["timestamp"] = _in_skew(case.query["timestamp"])
    elif case.method.upper() in ("GET", "HEAD") and case.path == "/analytics" and case.query:
        # One filter at a time (the document says so in prose): a positive case keeps its first.
        for name in [n for n in case.query if n in DIMENSIONS][1:]:
            del case.query[name]
    elif case.path == "/analytics/breakdown" and case.query is not None:
        _period(case)
    elif case.path == "/analytics/range" and case.query:
        start, end = _int(case.query.get("from")), _int(case.query.get("to"))
        if start is None or end is None:
            return case
        step = (24 if case.query.get("granularity") == "day" else 1) * HOUR_MS
        first = start // step * step
        # A few buckets are enough to check the answer's shape; the limit is tested in test_ranges.
        limit = int(os.environ.get(BUCKETS_ENV, RANGE_BUCKETS))
        last = min(MAX_TIMESTAMP_MS, first + min(limit, RANGE_BUCKETS) * step)
        case.query["to"] = min(end, last)
        _local(case)
    if case.path == "/analytics/range" and case.query:
        # A filter works one at a time, where the zone's rows start on UTC hours (prose in the document).
        named = [n for n in case.query if n in DIMENSIONS]
        for name in named[1:]:
            del case.query[name]
        if named and _refused(case, lambda q: parse_range_read(q, RANGE_BUCKETS, DIMENSIONS, SPLIT)):
            del case.query[named[0]]
    return case


def _refused(case: Any, parse: Any) -> bool:
    """Whether parsing the case's query raises a ParamError (what the server answers 400 for)."""
    try:
        parse({k: [str(v)] for k, v in case.query.items()})
    except ParamError:
        return True
    return False


def _period(case: Any) -> None:
    """A breakdown's hours: one timestamp, or `from` and `to` within its limit, in UTC or a zone whose
    days start on UTC hours (31 days at most); a filter only by the first of a declared pair with `by`
    (prose in the document)."""
    named = [n for n in case.query if n in DIMENSIONS]
    for name in named:
        if (name, case.query.get("by")) not in PAIRS or name != named[0]:
            del case.query[name]
    start, end = _int(case.query.get("from")), _int(case.query.get("to"))
    if "timestamp" in case.query or start is None or end is None:
        case.query.pop("from", None)
        case.query.pop("to", None)
        case.query.pop("tz", None)
        case.query.setdefault("timestamp", MODERN_MS)
        return
    case.query["to"] = min(end, start // HOUR_MS * HOUR_MS + 30 * 24 * HOUR_MS)
    if _refused(case, lambda q: parse_breakdown(q, DIMENSIONS, PAIRS, SPLIT)):
        case.query.pop("tz", None)
        case.query["from"], case.query["to"] = MODERN_MS, MODERN_MS + HOUR_MS


def _local(case: Any) -> None:
    """A range in a local zone: kept inside the bucket limit, and moved to 2023 when it would be a 400
    the schema cannot express (an offset off the quarter-hour, as local mean time; a local day past
    year 9999)."""
    tz = case.query.get("tz")
    if not isinstance(tz, str) or tz in ("", "UTC"):
        return
    query = {k: [str(v)] for k, v in case.query.items()}
    try:
        parse_range(query, RANGE_BUCKETS)
    except ParamError:
        case.query["from"] = MODERN_MS
        case.query["to"] = MODERN_MS + HOUR_MS
