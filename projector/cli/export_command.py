"""`./just export`: the numbers as the range reads give them, each row marked with its hours' audit
verdict; or, with `--raw`, the retained events from the log as NDJSON in the shape `./just import` takes.

The numbers come from the running HTTP server (`GET /analytics/range`, cut into spans it accepts), so an
export says exactly what a reader is told; the verdicts come from the audit's records in Redis. The raw
events come from the stream itself, hour subject by hour subject, in stream order."""

from __future__ import annotations

import datetime as dt
import gzip
import io
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import httpx
import msgspec
from nats.aio.client import Client as NATS
from nats.js.api import ConsumerConfig, DeliverPolicy

from contract import schema
from contract.hours import HOUR_MS, hour_token, parse_subject
from contract.keys import Keys
from deploy.projections_client import ProjectionsClient
from deploy.settings import Settings
from projector.audit.records import Records
from projector.audit.verdict import Verdict
from projector.log.ephemeral_read import delivered

RAW_FILTERS_MAX = 256
"""Up to this many hours are read through one filter subject each; a longer span reads the whole log."""
AUDITED, NOT_YET, MISMATCHED = "audited", "not yet audited", "mismatched"


class ExportError(Exception):
    """Said in one line; the export exits 2."""


@dataclass(frozen=True, slots=True)
class ExportArgs:
    start: str
    end: str
    granularity: str = "hour"
    tz: str = "UTC"
    by: str | None = None
    format: str = "csv"
    out: Path | None = None
    raw: bool = False
    url: str | None = None


def moment_ms(text: str, zone: dt.tzinfo) -> int:
    """An ISO 8601 date or time as milliseconds since the epoch; without an offset, in `zone`."""
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        raise ExportError(
            f"{text!r} is not an ISO 8601 date or time (2026-12-01, 2026-12-01T14:00Z)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=zone)
    return int(moment.timestamp() * 1000)


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ExportError(f"--tz {name!r} is not an IANA time zone") from None


@contextmanager
def _output(out: Path | None) -> Iterator[IO[bytes]]:
    """The file (gzipped when its name ends in .gz), or standard output."""
    if out is None:
        yield sys.stdout.buffer
        sys.stdout.buffer.flush()
        return
    with out.open("wb") as raw:
        if out.name.endswith(".gz"):
            with gzip.GzipFile(fileobj=raw, mode="wb") as packed:
                yield packed  # type: ignore[misc]  # a GzipFile writes bytes as any IO[bytes] does
        else:
            yield raw


async def export_raw(nc: NATS, settings: Settings, args: ExportArgs) -> int:
    """Every retained event whose UTC hour lies in [start, end), one NDJSON line each; returns how many."""
    start, end = moment_ms(args.start, dt.UTC), moment_ms(args.end, dt.UTC)
    first, last = start // HOUR_MS, (end - 1) // HOUR_MS
    if last < first:
        raise ExportError("--to must be after --from")
    prefix = settings.subject_prefix
    config = ConsumerConfig(deliver_policy=DeliverPolicy.ALL)
    if last - first < RAW_FILTERS_MAX:
        config.filter_subjects = [f"{prefix}.{hour_token(h)}.*" for h in range(first, last + 1)]
    else:
        config.filter_subject = f"{prefix}.>"
    written = 0
    encoder = msgspec.json.Encoder()
    with _output(args.out) as out:
        try:
            async for fetched in delivered(nc, settings.stream_name, config, settings.pull_reader):
                lines = io.BytesIO()
                for subject, payload in zip(fetched.subjects, fetched.payloads, strict=True):
                    try:
                        hour, _ = parse_subject(prefix, subject)
                        events = schema.decode(payload).events
                    except (ValueError, msgspec.DecodeError, schema.UnknownVersion):
                        continue  # not an event batch (it is in the dead letters, or another version)
                    if not first <= hour <= last:
                        continue
                    for event in events:
                        lines.write(encoder.encode(_line(event)))
                        lines.write(b"\n")
                        written += 1
                out.write(lines.getvalue())
        except TimeoutError:
            raise ExportError("the stream stopped answering; nothing more could be read") from None
    return written


def _line(event: schema.Event) -> dict[str, Any]:
    """The event in the shape `POST /analytics/batch` and `./just import` take."""
    line: dict[str, Any] = {"timestamp": event.ts, "user": event.user, "event": event.kind.value}
    if event.key is not None:
        line["key"] = event.key
    line.update(event.dims)
    return line


async def export_numbers(redis: ProjectionsClient, settings: Settings, args: ExportArgs, url: str) -> int:
    """The range read's rows of [start, end) with an `audit` column; returns how many rows."""
    if args.by is not None and args.by not in settings.dimension_names:
        declared = ", ".join(settings.dimension_names) or "none"
        raise ExportError(f"--by {args.by[:40]!r} is not a declared dimension ({declared})")
    if args.granularity not in ("hour", "day"):
        raise ExportError("--granularity must be hour or day")
    if args.format not in ("csv", "ndjson"):
        raise ExportError("--format must be csv or ndjson")
    zone = _zone(args.tz)
    start, end = moment_ms(args.start, zone), moment_ms(args.end, zone)
    if end <= start:
        raise ExportError("--to must be after --from")
    rows = await _rows(settings, url, args, start, end)
    records = Records(redis, Keys(settings.key_prefix))
    verdicts = await _verdicts(records, [r["start_ms"] for r in rows], [r["end_ms"] for r in rows])
    if args.by is not None:
        return await _export_by(settings, url, args, rows, verdicts)
    with _output(args.out) as out:
        if args.format == "csv":
            out.write(f"{args.granularity},unique_users,clicks,impressions,audit\n".encode())
        for row, verdict in zip(rows, verdicts, strict=True):
            if args.format == "csv":
                line = (
                    f"{row['start']},{row['unique_users']},{row['clicks']},{row['impressions']},{verdict}\n"
                )
                out.write(line.encode())
            else:
                shown = {k: v for k, v in row.items() if not k.endswith("_ms")}
                out.write(msgspec.json.encode({**shown, "audit": verdict}) + b"\n")
    return len(rows)


async def _export_by(
    settings: Settings, url: str, args: ExportArgs, rows: list[dict[str, Any]], verdicts: list[str]
) -> int:
    """Each bucket's breakdown by `--by` (the breakdown read's rows: up to 1,000 values by clicks, then
    (none), (other) and total), each line with the bucket's verdict; returns how many lines."""
    async with _client(settings, url) as http:
        with _output(args.out) as out:
            if args.format == "csv":
                out.write(
                    f"{args.granularity},{args.by},unique_users,clicks,impressions,ctr,audit\n".encode()
                )
            written = 0
            for row, verdict in zip(rows, verdicts, strict=True):
                query: dict[str, str | int] = {"by": str(args.by), "top": 1000, "tz": args.tz}
                query.update({"from": row["start_ms"], "to": row["end_ms"]})
                found = await _get(http, url, "/analytics/breakdown", query)
                for value in [*found["rows"], {**found["total"], "value": "total"}]:
                    out.write(_by_line(args, row["start"], value, verdict))
                    written += 1
    return written


def _by_line(args: ExportArgs, start: str, value: dict[str, Any], verdict: str) -> bytes:
    if args.format == "csv":
        ctr = "" if value["ctr"] is None else f"{value['ctr']:.4f}"
        counts = f"{value['unique_users']},{value['clicks']},{value['impressions']}"
        return f"{start},{value['value']},{counts},{ctr},{verdict}\n".encode()
    fields = {k: v for k, v in value.items() if k != "value"}
    return (
        msgspec.json.encode({"start": start, str(args.by): value["value"], **fields, "audit": verdict})
        + b"\n"
    )


def _client(settings: Settings, url: str) -> httpx.AsyncClient:
    """A client of the running server, with the first read token when tokens are set."""
    token = next((t.strip() for t in settings.read_tokens.split(",") if t.strip()), None)
    headers = {"Accept": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}
    return httpx.AsyncClient(base_url=url, timeout=60, headers=headers)


async def _get(http: httpx.AsyncClient, url: str, path: str, query: dict[str, str | int]) -> Any:
    """One read's JSON; ExportError when the server cannot be reached or refuses."""
    try:
        answer = await http.get(path, params=query)
    except httpx.TransportError as exc:
        raise ExportError(f"the HTTP server at {url} cannot be reached ({exc}); is it running?") from None
    if answer.status_code != 200:
        raise ExportError(f"GET {path}: {answer.status_code} {answer.text.strip()}")
    return answer.json()


async def _rows(settings: Settings, url: str, args: ExportArgs, start: int, end: int) -> list[dict[str, Any]]:
    """Every bucket of [start, end), read in spans of at most the server's bucket limit."""
    step = HOUR_MS * (24 if args.granularity == "day" else 1)
    span = step * max(1, settings.range_max_buckets - 2)  # a local day may be 23 or 25 hours long
    rows: list[dict[str, Any]] = []
    async with _client(settings, url) as http:
        at = start
        while at < end:
            upto = min(end, at + span)
            query: dict[str, str | int] = {
                "from": at,
                "to": upto,
                "granularity": args.granularity,
                "tz": args.tz,
            }
            buckets = (await _get(http, url, "/analytics/range", query))["buckets"]
            for bucket in buckets:
                first = dt.datetime.fromisoformat(bucket["start"].replace("Z", "+00:00"))
                if first.tzinfo is None:  # a UTC day is a date
                    first = first.replace(tzinfo=dt.UTC)
                bucket["start_ms"] = int(first.timestamp() * 1000)
            for bucket, after in zip(buckets, [*buckets[1:], None], strict=True):
                bucket["end_ms"] = after["start_ms"] if after is not None else upto
            if rows and buckets and rows[-1]["start"] == buckets[0]["start"]:
                rows.pop()  # a span cut inside a local day: the whole day is in the next answer
            rows.extend(buckets)
            at = upto
    return rows


async def _verdicts(records: Records, starts: list[int], ends: list[int]) -> list[str]:
    """Each row's verdict over the UTC hours it touches: mismatched if any is, audited if all are. An
    hour without a record at or before the audit's `through` held nothing to audit: it counts as audited."""
    spans = [range(s // HOUR_MS, (e - 1) // HOUR_MS + 1) for s, e in zip(starts, ends, strict=True)]
    through = await records.through()
    found: dict[int, str | None] = {}
    for hour in sorted({h for span in spans for h in span}):
        verdict = await records.verdict(hour)
        if verdict is None and through is not None and hour <= through:
            verdict = Verdict.OK.value
        found[hour] = verdict
    out = []
    for span in spans:
        mine = [found[h] for h in span]
        if Verdict.MISMATCH.value in mine:
            out.append(MISMATCHED)
        elif mine and all(v == Verdict.OK.value for v in mine):
            out.append(AUDITED)
        else:
            out.append(NOT_YET)
    return out
