"""The OpenAPI description of the analytics endpoints, served by Litestar at /schema.

The handlers read the raw query string with the parsers the fast front shares (faster, and each 400
names the parameter), so Litestar cannot see typed parameters; these Operation classes add them and the
answers to the document Litestar generates. Every limit comes from the module that enforces it, and
every request the document allows is one the server accepts, but for what JSON Schema cannot say (a
POST's timestamp against the server's clock, a range's length), stated in prose.
`tests/integration/test_schemathesis_cli.py` holds the document to that with `st run --checks all`.

The module is long because every operation's parameters and answers are spelled out here, one class
each, beside the schemas they share.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from zoneinfo import available_timezones

import msgspec
from litestar.openapi.spec import (
    OpenAPIFormat,
    OpenAPIHeader,
    OpenAPIMediaType,
    OpenAPIResponse,
    OpenAPIType,
    Operation,
    Parameter,
    Reference,
    RequestBody,
    Schema,
)

from api.breakdown import MAX_HOURS, TOP_DEFAULT, TOP_MAX, BreakdownJSON, RowJSON, Sort
from api.cache import HourJSON
from api.ranges import BucketJSON, Granularity, RangeJSON, TotalJSON
from contract.hours import MAX_TIMESTAMP_MS
from contract.schema import CONTROL, DIMENSION_VALUE, MAX_KEY_CHARS, MAX_USER_BYTES, Kind
from deploy.settings import Settings
from ingest.batch_body import Rejected
from ingest.post import BatchAnswer

DEFAULTS = Settings()

TIMESTAMP = Schema(type=OpenAPIType.INTEGER, minimum=0, maximum=MAX_TIMESTAMP_MS)
TEXT = "text/plain"
CSV = "text/csv"
JSON = "application/json"

_ALLOWED = "[^" + CONTROL.pattern.removeprefix("[")  # any character but a control character
_VISIBLE = r"[^\s" + CONTROL.pattern.removeprefix("[")  # ... and not whitespace
USER = Schema(
    description=f"1 to {MAX_USER_BYTES} bytes of UTF-8, no control characters, not only whitespace: "
    f"up to {MAX_USER_BYTES} printable ASCII characters, or up to {MAX_USER_BYTES // 4} of any "
    f"others (longer non-ASCII names are accepted while they fit in {MAX_USER_BYTES} bytes).",
    any_of=[
        Schema(
            type=OpenAPIType.STRING, min_length=1, max_length=MAX_USER_BYTES, pattern="^[ -~]*[!-~][ -~]*$"
        ),
        Schema(
            type=OpenAPIType.STRING,
            min_length=1,
            max_length=MAX_USER_BYTES // 4,
            pattern=f"^{_ALLOWED}*{_VISIBLE}{_ALLOWED}*$",
        ),
    ],
)
DIMENSION = Schema(type=OpenAPIType.STRING, pattern=f"^{DIMENSION_VALUE.pattern}$")
IDEMPOTENCY_KEY = Schema(
    type=OpenAPIType.STRING,
    min_length=1,
    max_length=MAX_KEY_CHARS,
    # Printable ASCII; HTTP strips spaces at either end, so a key starts and ends with a visible one.
    pattern=f"^[!-~]([ -~]{{0,{MAX_KEY_CHARS - 2}}}[!-~])?$",
)

_error = {
    TEXT: OpenAPIMediaType(schema=Schema(type=OpenAPIType.STRING, description="`<parameter>: <why>`")),
    JSON: OpenAPIMediaType(
        schema=Schema(
            type=OpenAPIType.OBJECT,
            required=["status", "error"],
            properties={
                "status": Schema(type=OpenAPIType.INTEGER),
                "error": Schema(type=OpenAPIType.STRING),
                "parameter": Schema(type=OpenAPIType.STRING),
                "dependency": Schema(type=OpenAPIType.STRING),
            },
        )
    ),
}
_retry_after: dict[str, OpenAPIHeader | Reference] = {
    "Retry-After": OpenAPIHeader(
        schema=Schema(type=OpenAPIType.INTEGER), description="seconds", required=True
    )
}
BAD_REQUEST = OpenAPIResponse(
    description="A parameter is missing or malformed, or breaks a rule stated in its description; "
    "the body names it.",
    content=_error,
)
UNAVAILABLE = OpenAPIResponse(
    description="NATS or Redis did not answer in time; nothing was stored or read. Retry later.",
    headers=_retry_after,
    content=_error,
)
UNAUTHORIZED = OpenAPIResponse(
    description="Only when the server has read tokens (`ANALYTICS_READ_TOKENS`): send "
    "`Authorization: Bearer <token>`.",
    content=_error,
)
NOT_KEPT = OpenAPIResponse(
    description="The hour's breakdowns are not in Redis: it is older than `ANALYTICS_HOT_HOURS` (the "
    "snapshot store keeps totals only), or it was counted before breakdowns (`./just replay` builds "
    "them). The body says which.",
    content=_error,
)
TOO_MANY = OpenAPIResponse(
    description="Only when `ANALYTICS_POST_RATE_PER_S` is set: this client is over its rate; nothing "
    "was stored.",
    headers=_retry_after,
    content=_error,
)


def _query(name: str, schema: Schema, description: str, required: bool = True) -> Parameter:
    return Parameter(name=name, param_in="query", required=required, description=description, schema=schema)


@dataclass
class PostAnalytics(Operation):
    def __post_init__(self) -> None:
        kinds = [kind.value for kind in Kind]
        self.summary = "Record one click or impression"
        self.description = (
            "Answers 204 only once the event is durably in the event log (JetStream's PubAck). "
            "The event may carry the dimensions the server declares (`ANALYTICS_DIMENSIONS`, default "
            f"{', '.join(DEFAULTS.dimension_names)}): any other parameter named like one "
            "(`[a-z][a-z0-9_]*`) is a 400 naming it; others (a `_` cache-buster) are ignored.\n\n"
            "Shorthand, for curl and logs: a value-less flag `&click` or `&impression` may stand in for "
            "`event` (`POST /analytics?timestamp=1700000000000&user=ann&click`). Give exactly one of "
            "`event`, `click` or `impression`; more than one is a 400."
        )
        self.parameters = [
            _query(
                "timestamp",
                TIMESTAMP,
                "When the event happened, in milliseconds since the epoch (UTC); its hour is where it "
                "counts. At most `ANALYTICS_FUTURE_SKEW_MS` (default "
                f"{DEFAULTS.future_skew_ms} ms) ahead of the server's clock: later is a 400 (a schema "
                "cannot say 'now').",
            ),
            _query("user", USER, "Who; unique users are counted per hour by this name."),
            _query("event", Schema(type=OpenAPIType.STRING, enum=kinds), "What happened."),
            *(
                _query(name, DIMENSION, f"The event's {name} (a dimension), if any.", required=False)
                for name in DEFAULTS.dimension_names
            ),
            Parameter(
                name="Idempotency-Key",
                param_in="header",
                description=f"1 to {MAX_KEY_CHARS} printable ASCII characters (HTTP drops spaces at "
                "either end): retries with the same key from the same user count once within the dedup "
                "window.",
                schema=IDEMPOTENCY_KEY,
            ),
        ]
        self.responses = {
            "204": OpenAPIResponse(description="Stored durably."),
            "400": BAD_REQUEST,
            "429": TOO_MANY,
            "503": UNAVAILABLE,
        }


_batch_line = Schema(
    type=OpenAPIType.OBJECT,
    required=["timestamp", "user", "event"],
    properties={
        "timestamp": TIMESTAMP,
        "user": USER,
        "event": Schema(type=OpenAPIType.STRING, enum=[kind.value for kind in Kind]),
        "key": IDEMPOTENCY_KEY,
        **{name: DIMENSION for name in DEFAULTS.dimension_names},
    },
    additional_properties=False,
)
_batch_body = Schema(
    type=OpenAPIType.ARRAY,
    min_items=1,
    max_items=DEFAULTS.batch_max_events,
    items=_batch_line,
    description="One event per line: as NDJSON, a JSON object a line; as CSV, a header line naming "
    "the columns (`timestamp,user,event`, then `key` and dimensions if wanted), then a row a line "
    "(no line breaks inside a cell). The array here is what the lines hold.",
)


@dataclass
class PostBatch(Operation):
    def __post_init__(self) -> None:
        self.summary = "Record a batch of clicks and impressions"
        self.description = (
            "Answers 200 only once every accepted event is durably in the event log (JetStream's "
            "PubAck). Each line obeys the rules of `POST /analytics`; a line that breaks one is refused "
            "on its own, named in `rejected` by its line number, and never stops the others. With an "
            "`Idempotency-Key` header each line without a `key` gets one derived from it and its line "
            "number, so a retried batch counts once. `Content-Encoding: gzip` is accepted. At most "
            f"`ANALYTICS_BATCH_MAX_EVENTS` (default {DEFAULTS.batch_max_events}) events and "
            f"`ANALYTICS_BATCH_MAX_BYTES` (default {DEFAULTS.batch_max_bytes}) bytes after "
            "decompression; more is a 413. The per-client rate limit counts the batch's events."
        )
        self.request_body = RequestBody(
            required=True,
            content={
                "application/x-ndjson": OpenAPIMediaType(schema=_batch_body),
                CSV: OpenAPIMediaType(schema=_batch_body),
            },
        )
        self.parameters = [
            Parameter(
                name="Idempotency-Key",
                param_in="header",
                description="Lines without a `key` get `<this>/<line number>`: a retry of the same "
                "batch with the same header counts each event once.",
                schema=IDEMPOTENCY_KEY,
            )
        ]
        self.responses = {
            "200": OpenAPIResponse(
                description="Every accepted event is stored durably; refused lines are listed.",
                content={JSON: OpenAPIMediaType(schema=_batch_answer)},
            ),
            "400": BAD_REQUEST,
            "413": OpenAPIResponse(description="Over a batch limit, which the body names.", content=_error),
            "415": OpenAPIResponse(
                description="Not NDJSON or CSV, or an encoding other than gzip.", content=_error
            ),
            "429": TOO_MANY,
            "503": UNAVAILABLE,
        }


def _object(struct: type[msgspec.Struct], **special: Schema) -> Schema:
    """A JSON body's schema from the msgspec Struct that renders it: counts are never negative."""
    properties: dict[str, Schema | Reference] = {}
    for field in msgspec.structs.fields(struct):
        plain: dict[Any, Schema] = {
            int: Schema(type=OpenAPIType.INTEGER, minimum=0),
            str: Schema(type=OpenAPIType.STRING),
        }
        properties[field.encode_name] = special.get(field.name) or plain[field.type]
    return Schema(type=OpenAPIType.OBJECT, required=list(properties), properties=properties)


_moment = Schema(type=OpenAPIType.STRING, format=OpenAPIFormat.DATE_TIME)
_batch_answer = _object(
    BatchAnswer,
    rejected=Schema(
        type=OpenAPIType.ARRAY,
        items=_object(Rejected, line=Schema(type=OpenAPIType.INTEGER, minimum=1)),
    ),
)
_hour_json = _object(HourJSON, hour_start=_moment, hour_end=_moment)
_range_json = _object(
    RangeJSON,
    granularity=Schema(type=OpenAPIType.STRING, enum=[g.value for g in Granularity]),
    buckets=Schema(
        type=OpenAPIType.ARRAY,
        items=_object(
            BucketJSON,
            start=Schema(
                type=OpenAPIType.STRING,
                description=(
                    "The bucket's first moment: in UTC an ISO 8601 time (hours, `2026-05-06T14:00:00Z`) "
                    "or date (days, `2026-05-06`); in any other zone its local time with the offset "
                    "(`2026-11-25T00:00:00+05:30`)."
                ),
            ),
        ),
    ),
    total=_object(TotalJSON),
)
_counts_csv = ",[0-9]+,[0-9]+,[0-9]+\n"
_range_csv = (
    "^(hour|day),unique_users,clicks,impressions\n([0-9TZ:+-]+" + _counts_csv + ")*total" + _counts_csv
)
ZONES = sorted(available_timezones())
"""What `tz` may name: the IANA zones of the pinned tzdata."""
_validators: dict[str, OpenAPIHeader | Reference] = {
    "ETag": OpenAPIHeader(schema=Schema(type=OpenAPIType.STRING), description="On hour reads"),
    "Cache-Control": OpenAPIHeader(schema=Schema(type=OpenAPIType.STRING), required=True),
}
_ranges = (
    "Ranges are `GET /analytics/range`. With `Authorization: Bearer <token>` when the server has read tokens."
)


DIMENSION_VALUE_SCHEMA = Schema(type=OpenAPIType.STRING, pattern=f"^{DIMENSION_VALUE.pattern}$")


def _zone(description: str) -> Parameter:
    """The optional `tz` of a read: an IANA zone (or empty for UTC)."""
    return _query(
        "tz", Schema(type=OpenAPIType.STRING, enum=[*ZONES, ""], default="UTC"), description, required=False
    )


def _filters(description: str) -> list[Parameter]:
    return [
        _query(name, DIMENSION_VALUE_SCHEMA, description, required=False) for name in DEFAULTS.dimension_names
    ]


_breakdown_row = _object(
    RowJSON, value=Schema(type=OpenAPIType.STRING), ctr=Schema(type=[OpenAPIType.NUMBER, OpenAPIType.NULL])
)
_breakdown_json = _object(
    BreakdownJSON,
    by=Schema(type=OpenAPIType.STRING),
    sort=Schema(type=OpenAPIType.STRING, enum=[s.value for s in Sort]),
    rows=Schema(type=OpenAPIType.ARRAY, items=_breakdown_row),
    total=_breakdown_row,
)
_breakdown_line = r"[A-Za-z0-9._:/()-]+,[0-9]+,[0-9]+,[0-9]+,([0-9]+\.[0-9]{4})?\n"
_breakdown_csv = rf"^[a-z][a-z0-9_]*,unique_users,clicks,impressions,ctr\n({_breakdown_line})+$"


@dataclass
class GetBreakdown(Operation):
    def __post_init__(self) -> None:
        self.summary = _head(
            self, "Unique users, clicks and impressions of one UTC hour or a period per value of a dimension"
        )
        self.description = (
            "A row per value of the dimension `by` (the `top` by `sort`, ties by value), then `(none)` "
            "(events without the dimension), `(other)` (values past `ANALYTICS_DIMENSION_MAX_VALUES` "
            "in an hour) and `total` (unfiltered: its unique users are the union, as a range read's). "
            "Each value's unique users are a union over the period's hours. `ctr` is "
            "clicks per impression, empty without impressions. CSV by default, JSON with `Accept: "
            f"application/json`. {_ranges}"
        )
        self.parameters = [
            _query(
                "by",
                Schema(type=OpenAPIType.STRING, enum=list(DEFAULTS.dimension_names)),
                "A declared dimension (`ANALYTICS_DIMENSIONS`).",
            ),
            _query(
                "timestamp",
                TIMESTAMP,
                "One hour: any moment of it, in milliseconds since the epoch (UTC). Give either this, or "
                "`from` and `to`.",
                required=False,
            ),
            _query(
                "from",
                TIMESTAMP,
                "A period: from the UTC hour containing this moment (ms) ...",
                required=False,
            ),
            _query(
                "to",
                TIMESTAMP,
                "... up to this moment (ms, exclusive): every UTC hour starting before it, at most "
                f"{MAX_HOURS} (more is a 400 naming `to`); none when it is at or before `from`'s hour "
                "(an empty period).",
                required=False,
            ),
            _zone(
                "A period of local days in this IANA zone instead: from the day holding `from` to the "
                "last starting before `to`, at most 31. A zone whose days start inside a UTC hour "
                "(Asia/Kolkata at 18:30 UTC) is read exactly when it is in `ANALYTICS_DAY_ZONES` (those "
                "hours keep breakdowns per quarter-hour); any other such zone is a 400 naming `tz`."
            ),
            _query(
                "sort",
                Schema(type=OpenAPIType.STRING, enum=[s.value for s in Sort], default=Sort.CLICKS.value),
                "What the rows are ordered by, largest first.",
                required=False,
            ),
            _query(
                "top",
                Schema(type=OpenAPIType.INTEGER, minimum=1, maximum=TOP_MAX, default=TOP_DEFAULT),
                "How many values get a row.",
                required=False,
            ),
            *_filters(
                "Only the events with this value: the first dimension of a pair declared in "
                f"`ANALYTICS_DIMENSION_PAIRS` (default {DEFAULTS.dimension_pairs}) whose second is `by` "
                "(`by=creative&campaign=spring-sale`); rows are then that value's pairs, and `total` is "
                "its filtered read. Any other filter is a 400 naming the declared pairs."
            ),
        ]
        self.responses = {
            "200": _table(
                "A row per value shown, then (none), (other) and total.", _breakdown_csv, _breakdown_json
            ),
            "400": BAD_REQUEST,
            "401": UNAUTHORIZED,
            "409": NOT_KEPT,
            "503": UNAVAILABLE,
        }


def _table(description: str, csv_pattern: str, json_schema: Schema) -> OpenAPIResponse:
    """A 200 of rows: CSV by default, JSON with `Accept: application/json`."""
    return OpenAPIResponse(
        description=description,
        headers={"Cache-Control": _validators["Cache-Control"]},
        content={
            CSV: OpenAPIMediaType(schema=Schema(type=OpenAPIType.STRING, pattern=csv_pattern)),
            JSON: OpenAPIMediaType(schema=json_schema),
        },
    )


def _head(operation: Operation, summary: str) -> str:
    return summary + (", headers only" if "Head" in (operation.operation_id or "") else "")


@dataclass
class GetAnalytics(Operation):
    def __post_init__(self) -> None:
        self.summary = _head(self, "Unique users, clicks and impressions of one UTC hour")
        self.description = (
            f"The hour that contains `timestamp`. JSON with `Accept: application/json`, text otherwise. "
            f"Answers carry an ETag: send it back in `If-None-Match` for a 304. {_ranges}"
        )
        self.parameters = [
            _query("timestamp", TIMESTAMP, "Any moment of the hour, in milliseconds since the epoch (UTC)."),
            *_filters("Count only the hour's events with this value of the dimension; one filter at a time."),
        ]
        self.responses = {
            "200": OpenAPIResponse(
                description="The hour's totals (of the events with the filter's value, if any).",
                headers=_validators,
                content={
                    TEXT: OpenAPIMediaType(
                        schema=Schema(
                            type=OpenAPIType.STRING,
                            pattern=r"^unique_users,[0-9]+\nclicks,[0-9]+\nimpressions,[0-9]+\n$",
                        )
                    ),
                    JSON: OpenAPIMediaType(schema=_hour_json),
                },
            ),
            "304": OpenAPIResponse(
                description="Unchanged since the ETag in If-None-Match.", headers=_validators
            ),
            "400": BAD_REQUEST,
            "401": UNAUTHORIZED,
            "409": NOT_KEPT,
            "503": UNAVAILABLE,
        }


@dataclass
class GetRange(Operation):
    def __post_init__(self) -> None:
        self.summary = _head(self, "Unique users, clicks and impressions per hour or day over a range")
        self.description = (
            "Every bucket (hour or day, in the zone `tz`, UTC by default) from the one containing "
            "`from` up to, not including, "
            "`to`, and the total over the range (its unique users are the union, not a sum). A `to` at "
            "or before `from` rounded down to its bucket is an empty range: no rows and a zero total. "
            f"At most `ANALYTICS_RANGE_MAX_BUCKETS` buckets (default {DEFAULTS.range_max_buckets}): "
            "more is a 400 naming `to` (a schema cannot relate two parameters). CSV by default, JSON with "
            "`Accept: application/json`. `GET /analytics?from=&to=` answers the same, for older "
            "clients."
        )
        self.parameters = [
            _query("from", TIMESTAMP, "The first bucket is the one containing this moment (ms, UTC)."),
            _query("to", TIMESTAMP, "Buckets starting before this moment (ms, UTC; exclusive)."),
            _query(
                "granularity",
                Schema(
                    type=OpenAPIType.STRING,
                    enum=[*(g.value for g in Granularity), ""],
                    default=Granularity.HOUR.value,
                ),
                "Hour or day buckets (of the zone `tz`); empty or absent: hour.",
                required=False,
            ),
            _zone(
                "The IANA time zone whose local hours or days the buckets are (DST included: a 23 or "
                "25-hour day, a repeated hour as two buckets); empty or absent: UTC. A range where "
                "the zone's offset is not a whole number of quarter-hours (local mean time, before "
                "about 1900) is a 400 naming `tz`."
            ),
            *_filters(
                "Count only the events with this value of the dimension; one filter at a time, over at "
                "most 744 hours; in a zone whose hours or days start inside UTC hours only where "
                "`ANALYTICS_DAY_ZONES` keeps them per quarter-hour (else a 400 naming `tz` or `to`)."
            ),
        ]
        self.responses = {
            "200": _table("A row per bucket, then the total.", _range_csv, _range_json),
            "400": BAD_REQUEST,
            "401": UNAUTHORIZED,
            "409": NOT_KEPT,
            "503": UNAVAILABLE,
        }
