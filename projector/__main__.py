"""Command line of the projector: `run`, `replay`, `audit`, `inspect`, `stream`, `export` (and `build`, a
replay's helper)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from pathlib import Path

import nats.errors
import redis.exceptions

from deploy.settings import SettingsError
from projector.cli.audit_command import AuditArgs, audit_command
from projector.cli.commands import Command, build, parent_gone, read_job, run_command
from projector.cli.export_command import ExportArgs
from projector.cli.lifetime import end_with_parent, on_stop_signals

log = logging.getLogger("projector")

LOST = (
    nats.errors.Error,
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    OSError,
    TimeoutError,
)
"""A server that went away mid-command: said in one line, not a traceback."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m projector", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="fold the stream into Redis, live")
    run.add_argument("--partitions", help="comma-separated partitions (default: all)")
    rep = sub.add_parser("replay", help="rebuild projections from the stream, switch atomically")
    rep.add_argument("hour", nargs="?", help="only this UTC hour, as YYYYMMDDHH")
    sub.add_parser(
        "stream", help="create the stream, or apply configuration changes (not the partition count)"
    )
    ins = sub.add_parser("inspect", help="stream, subjects, consumer lag, last events")
    ins.add_argument("--last", type=int, default=10, help="how many of the last messages to decode")
    aud = sub.add_parser("audit", help="recount closed hours from the log and compare with what is served")
    aud.add_argument(
        "hours", nargs="*", metavar="HOUR", help="UTC hours as YYYYMMDDHH (default: every closed one)"
    )
    aud.add_argument("--since", help="only hours from this ISO-8601 time on")
    aud.add_argument(
        "--repair", action="store_true", help="rebuild each mismatched hour, then audit it again"
    )
    aud.add_argument("--follow", action="store_true", help="keep auditing hours as they close (a service)")
    exp = sub.add_parser("export", help="the numbers with their audit verdicts, or the raw events (--raw)")
    exp.add_argument("--from", dest="start", required=True, help="ISO 8601 date or time (in --tz)")
    exp.add_argument("--to", dest="end", required=True, help="ISO 8601 date or time (in --tz), exclusive")
    exp.add_argument("--granularity", default="hour", choices=["hour", "day"])
    exp.add_argument(
        "--tz", default="UTC", help="IANA time zone of the rows (and of times without an offset)"
    )
    exp.add_argument("--by", help="a declared dimension: each bucket's breakdown by it, a line per value")
    exp.add_argument("--format", default="csv", choices=["csv", "ndjson"])
    exp.add_argument(
        "--out", type=Path, help="a file (gzipped when it ends in .gz); default: standard output"
    )
    exp.add_argument("--raw", action="store_true", help="the retained events as NDJSON, for ./just import")
    exp.add_argument("--url", help="the HTTP server (default: ANALYTICS_HTTP_HOST and ANALYTICS_HTTP_PORT)")
    sub.add_parser("build", help="(started by replay) fold the partitions of a job read from stdin")
    return parser


async def _main(command: Command) -> int:
    stop = asyncio.Event()

    def graceful() -> bool:
        stop.set()
        if command.parent is not None and os.getppid() != command.parent:
            parent_gone()  # the parent-death signal: its replay was killed
        return (
            command.graceful
        )  # a running projector lets go of its leases itself; anything else is cancelled

    signals = on_stop_signals(graceful)
    try:
        if command.name == "build":
            job = read_job(sys.stdin.buffer.read())
            command.parent = job.parent
            return await build(job)
        if command.audit is not None:
            return await audit_command(command.audit, stop)
        return await run_command(command, stop)
    except asyncio.CancelledError:
        if signals:
            return 128 + signals[0]
        raise


def main() -> None:
    args = _parser().parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    end_with_parent()
    command = Command(
        args.command,
        partitions=getattr(args, "partitions", None),
        hour=getattr(args, "hour", None),
        last=getattr(args, "last", 10),
    )
    if args.command == "export":
        command.export = ExportArgs(
            args.start,
            args.end,
            args.granularity,
            args.tz,
            args.by,
            args.format,
            args.out,
            args.raw,
            args.url,
        )
    if args.command == "audit":
        command.audit = AuditArgs(args.hours, args.since, args.repair, args.follow)
        command.graceful = args.follow
    try:
        sys.exit(asyncio.run(_main(command)))
    except SettingsError as exc:
        sys.exit(f"configuration: {exc}")
    except LOST as exc:
        sys.exit(
            f"projector {command.name}: lost a server ({type(exc).__name__}: {exc}); is ./just up running?"
        )
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
