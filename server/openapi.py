"""The OpenAPI description of the two analytics endpoints, served by Litestar at /schema.

The handlers read the raw query string themselves (it is faster, and the 400s name the parameter),
so Litestar cannot see their parameters; these Operation classes add them, and the answers, to the
document Litestar generates.
"""

from __future__ import annotations

from dataclasses import dataclass

from litestar.openapi.spec import (
    OpenAPIFormat,
    OpenAPIHeader,
    OpenAPIMediaType,
    OpenAPIResponse,
    OpenAPIType,
    Operation,
    Parameter,
    Reference,
    Schema,
)

from contract.hours import MAX_TIMESTAMP_MS
from contract.schema import MAX_KEY_CHARS

TIMESTAMP = Schema(type=OpenAPIType.INTEGER, minimum=0, maximum=MAX_TIMESTAMP_MS)
TEXT = "text/plain"
CSV = "text/csv"
JSON = "application/json"

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
    description="A parameter is missing or malformed; the body names it.", content=_error
)
UNAVAILABLE = OpenAPIResponse(
    description="NATS or Redis did not answer in time; nothing was stored or read. Retry later.",
    headers=_retry_after,
    content=_error,
)


def _flag(name: str, what: str) -> Parameter:
    return Parameter(
        name=name,
        param_in="query",
        description=f"A flag without a value: the event is {what}. Give exactly one of `click`, "
        "`impression` or `event`.",
        allow_empty_value=True,
        schema=Schema(type=OpenAPIType.STRING, enum=[""]),
    )


@dataclass
class PostAnalytics(Operation):
    def __post_init__(self) -> None:
        self.summary = "Record one click or impression"
        self.description = (
            "Answers 204 only once the event is durably in the event log (JetStream's PubAck). "
            "Unknown parameters are ignored."
        )
        self.parameters = [
            Parameter(
                name="timestamp",
                param_in="query",
                required=True,
                description="When the event happened, in milliseconds since the epoch (UTC); its hour is "
                "where it counts. At most one day in the future.",
                schema=TIMESTAMP,
            ),
            Parameter(
                name="user",
                param_in="query",
                required=True,
                description="Who: 1 to 256 bytes of UTF-8, no control characters, not only whitespace.",
                schema=Schema(type=OpenAPIType.STRING, min_length=1),
            ),
            _flag("click", "a click"),
            _flag("impression", "an impression"),
            Parameter(
                name="event",
                param_in="query",
                description="The same as the flags, spelled out.",
                schema=Schema(type=OpenAPIType.STRING, enum=["click", "impression"]),
            ),
            Parameter(
                name="Idempotency-Key",
                param_in="header",
                description=f"1 to {MAX_KEY_CHARS} printable ASCII characters: retries with the same key "
                "from the same user count once within the dedup window.",
                schema=Schema(type=OpenAPIType.STRING, min_length=1, max_length=MAX_KEY_CHARS),
            ),
        ]
        self.responses = {
            "204": OpenAPIResponse(description="Stored durably."),
            "400": BAD_REQUEST,
            "503": UNAVAILABLE,
        }


_hour_json = Schema(
    type=OpenAPIType.OBJECT,
    required=["hour_start", "hour_end", "unique_users", "clicks", "impressions"],
    properties={
        "hour_start": Schema(type=OpenAPIType.STRING, format=OpenAPIFormat.DATE_TIME),
        "hour_end": Schema(type=OpenAPIType.STRING, format=OpenAPIFormat.DATE_TIME),
        "unique_users": Schema(type=OpenAPIType.INTEGER, minimum=0),
        "clicks": Schema(type=OpenAPIType.INTEGER, minimum=0),
        "impressions": Schema(type=OpenAPIType.INTEGER, minimum=0),
    },
)
_counts: dict[str, Schema | Reference] = {
    "unique_users": Schema(type=OpenAPIType.INTEGER, minimum=0),
    "clicks": Schema(type=OpenAPIType.INTEGER, minimum=0),
    "impressions": Schema(type=OpenAPIType.INTEGER, minimum=0),
}
_range_json = Schema(
    type=OpenAPIType.OBJECT,
    required=["granularity", "buckets", "total"],
    properties={
        "granularity": Schema(type=OpenAPIType.STRING, enum=["hour", "day"]),
        "buckets": Schema(
            type=OpenAPIType.ARRAY,
            items=Schema(
                type=OpenAPIType.OBJECT,
                required=["start", *_counts],
                properties={"start": Schema(type=OpenAPIType.STRING), **_counts},
            ),
        ),
        "total": Schema(type=OpenAPIType.OBJECT, required=list(_counts), properties=_counts),
    },
)
_validators: dict[str, OpenAPIHeader | Reference] = {
    "ETag": OpenAPIHeader(schema=Schema(type=OpenAPIType.STRING), description="On hour reads"),
    "Cache-Control": OpenAPIHeader(schema=Schema(type=OpenAPIType.STRING), required=True),
}


@dataclass
class GetAnalytics(Operation):
    def __post_init__(self) -> None:
        head = "Head" in (self.operation_id or "")
        self.summary = "Unique users, clicks and impressions of one UTC hour" + (
            ", headers only" if head else ""
        )
        self.description = "The hour that contains `timestamp`. JSON with `Accept: application/json`."
        self.parameters = [
            Parameter(
                name="timestamp",
                param_in="query",
                description="Any moment of the hour, in milliseconds since the epoch (UTC). Required "
                "unless `from` and `to` ask for a range.",
                schema=TIMESTAMP,
            ),
            Parameter(
                name="from",
                param_in="query",
                description="Range read: the first bucket is the one containing this moment (ms, UTC).",
                schema=TIMESTAMP,
            ),
            Parameter(
                name="to",
                param_in="query",
                description="Range read: buckets starting before this moment (ms, UTC; exclusive).",
                schema=TIMESTAMP,
            ),
            Parameter(
                name="granularity",
                param_in="query",
                description="Range read: `hour` (default) or `day` (UTC days) buckets.",
                schema=Schema(type=OpenAPIType.STRING, enum=["hour", "day"]),
            ),
            Parameter(
                name="Accept",
                param_in="header",
                description="`application/json` for JSON; anything else gets text.",
                schema=Schema(type=OpenAPIType.STRING, enum=[TEXT, JSON]),
            ),
        ]
        self.responses = {
            "200": OpenAPIResponse(
                description="The hour's totals.",
                headers=_validators,
                content={
                    TEXT: OpenAPIMediaType(
                        schema=Schema(
                            type=OpenAPIType.STRING,
                            pattern=r"^unique_users,[0-9]+\nclicks,[0-9]+\nimpressions,[0-9]+\n$",
                        )
                    ),
                    CSV: OpenAPIMediaType(
                        schema=Schema(
                            type=OpenAPIType.STRING,
                            description="A range: a header, a row per bucket, then `total` (uniques are "
                            "the union over the range)",
                        )
                    ),
                    JSON: OpenAPIMediaType(schema=Schema(one_of=[_hour_json, _range_json])),
                },
            ),
            "304": OpenAPIResponse(
                description="Unchanged since the ETag in If-None-Match.", headers=_validators
            ),
            "400": BAD_REQUEST,
            "503": UNAVAILABLE,
        }
