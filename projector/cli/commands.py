"""What each command of `python -m projector` does once its arguments are read.

`inspect`, `replay`, `stream` and `build` reach NATS and Redis within ANALYTICS_CONNECT_DEADLINE_S or
say in one line which one they cannot reach, and exit 1. `run` is a long-running service (the
supervisor starts it beside the servers, which may come up later): it keeps trying with backoff, one
WARNING per try, never a traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
from dataclasses import dataclass
from typing import NoReturn

import msgspec
import nats.errors
from nats.aio.client import Client as NATS
from nats.js.errors import NotFoundError

from contract.hours import parse_hour_token
from contract.keys import Keys
from deploy.backoff import with_backoff
from deploy.projections_client import ProjectionsClient, check_cluster
from deploy.settings import Settings
from projector import metrics
from projector.audit.records import Records
from projector.cli.audit_command import AuditArgs, audit_view
from projector.cli.export_command import ExportArgs, ExportError, export_numbers, export_raw
from projector.cli.inspect_view import cluster_view, inspect_view
from projector.live.balancer import run_projector
from projector.log.stream_config import check_partitions, ensure_stream
from projector.projections.store import ProjectionStore
from projector.reach import keep_reaching_nats, keep_reaching_redis, reach_nats, reach_redis
from projector.replay.build_processes import BuildJob, build_partitions
from projector.replay.driver import replay
from projector.replay.reports import ReplayRefused
from projector.replay.single_hour import replay_hour

log = logging.getLogger("projector")


@dataclass
class Command:
    """A parsed command line: which command, and its options."""

    name: str
    partitions: str | None = None
    hour: str | None = None
    last: int = 10
    graceful: bool = False
    """Set once the live projector runs: a stop signal then lets it hand its leases back itself."""
    audit: AuditArgs | None = None
    """The options of `audit`."""
    export: ExportArgs | None = None
    """The options of `export`."""
    parent: int | None = None
    """A build's replay: when a stop signal comes because the replay is gone, the build says so."""


LEADER_ELECTION_S = 30.0
"""How long `stream` keeps asking a cluster that answers but has not elected its stream leaders yet."""
STREAM_REQUEST_S = 2.0
"""How long one of its requests waits: a stream without a leader never answers, so the try is lost."""


async def run_command(command: Command, stop: asyncio.Event) -> int:
    """`run`, `replay`, `inspect` or `stream`, with the connections it needs."""
    # The stream's configuration is the admin's to change; everything else runs as the projector.
    settings = Settings.from_env(role="admin" if command.name == "stream" else "projector")
    deadline = settings.connect_deadline_s
    name = f"hourglass-{command.name}"
    if command.name == "run":
        nc = await keep_reaching_nats(settings, name, deadline)
    else:
        nc = await reach_nats(settings, name, deadline)
    try:
        if command.name == "stream":
            # A cluster just up answers before all its leaders are elected (its meta leader took 5 s in
            # CI), and a request to a stream without a leader gets no answer at all: each try waits
            # briefly, and tries go on for a while (a lost server still ends in one line).
            async with asyncio.timeout(max(deadline, LEADER_ELECTION_S)):
                said = await with_backoff(
                    lambda: ensure_stream(nc, settings, request_timeout_s=STREAM_REQUEST_S),
                    (TimeoutError,),
                    "JetStream's stream leaders",
                    log,
                )
            print(said)
            return 0
        if command.export is not None:
            return await _export(command.export, settings, nc)
        if command.name == "inspect":
            await check_cluster(settings)  # refused in one line before anything is printed
            sys.stdout.write(await inspect_view(settings, nc, last=command.last))
            sys.stdout.write(await cluster_view(settings))
            sys.stdout.write(await audit_view(settings))
            return 0
        # Before anything touches Redis: a projector with the wrong partition count must write nothing.
        await _wait_for_stream(nc, settings, stop, wait=command.name == "run")
        if command.name == "run":
            redis_client = await keep_reaching_redis(settings, deadline)
        else:
            redis_client = await reach_redis(settings, deadline)
        try:
            await _with_redis(
                command,
                settings,
                nc,
                redis_client,
                stop,
            )
        finally:
            await redis_client.aclose()
    finally:
        await nc.close()
    return 0


async def _export(args: ExportArgs, settings: Settings, nc: NATS) -> int:
    """`export`: exit 2 with one line when the export cannot be made."""
    try:
        if args.raw:
            written = await export_raw(nc, settings, args)
            print(f"exported {written:,} events", file=sys.stderr)
            return 0
        redis_client = await reach_redis(settings, settings.connect_deadline_s)
        try:
            rows = await export_numbers(redis_client, settings, args, args.url or settings.http_url)
        finally:
            await redis_client.aclose()
        print(f"exported {rows:,} rows", file=sys.stderr)
        return 0
    except ExportError as exc:
        print(f"export: {exc}", file=sys.stderr)
        return 2


async def _with_redis(
    command: Command, settings: Settings, nc: NATS, redis_client: ProjectionsClient, stop: asyncio.Event
) -> None:
    await _check_eviction(ProjectionStore.from_settings(redis_client, settings))
    try:
        if command.name == "run":
            metrics.serve(settings.projector_metrics_port)
            partitions = _partitions(command.partitions, settings)
            log.info("projecting partitions %s of %s", partitions, settings.stream_name)
            command.graceful = True
            through = Records(redis_client, Keys(settings.key_prefix)).through  # compaction waits for it
            await run_projector(settings, nc, redis_client, stop, partitions, audited_through=through)
        elif command.name == "replay" and command.hour:
            hour = parse_hour_token(command.hour)
            report = await replay_hour(settings, nc, redis_client, hour)
            print(
                f"rebuilt hour {command.hour} from {report.events} events ({report.messages} messages) "
                f"in {report.seconds:.2f}s"
            )
        else:
            done = await replay(settings, nc, redis_client)
            print(
                f"replayed {done.events} events ({done.messages} messages) into generation "
                f"{done.generation} in {done.seconds:.2f}s; generation {done.previous} retired"
            )
    except ReplayRefused as exc:
        raise SystemExit(f"replay refused: {exc}") from None


def read_job(raw: bytes) -> BuildJob:
    """The job a build process reads from stdin; a truncated or missing one means its replay is gone."""
    try:
        return msgspec.json.decode(raw, type=BuildJob)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        what = "it left no job on stdin" if not raw.strip() else f"its job on stdin is cut short: {exc}"
        raise SystemExit(
            f"the replay that started this build is gone; stopping ({what}; builds are started by "
            "`python -m projector replay`)"
        ) from None


async def build(job: BuildJob) -> int:
    """A build process of a replay: fold the job's partitions, print what was built, as JSON."""
    settings = Settings.from_env(job.settings)
    watching = asyncio.create_task(_exit_with_parent(job.parent))
    await asyncio.sleep(0)  # the first look, before anything is written
    nc = await reach_nats(settings, "hourglass-replay-build", settings.connect_deadline_s)
    try:
        redis_client = await reach_redis(settings, settings.connect_deadline_s)
        try:
            built = await build_partitions(job, nc, redis_client)
        finally:
            await redis_client.aclose()
    finally:
        watching.cancel()
        await nc.close()
    sys.stdout.buffer.write(msgspec.json.encode(built) + b"\n")
    return 0


async def _exit_with_parent(parent: int) -> None:
    """A build outliving its replay (killed) would write into a generation the next replay drops."""
    while True:
        if os.getppid() != parent:
            break
        await asyncio.sleep(0.5)
    parent_gone()


def parent_gone() -> NoReturn:
    """A build whose replay is gone stops at once, writing nothing more."""
    log.error("the replay that started this build is gone; stopping")
    logging.shutdown()
    os._exit(3)


async def _wait_for_stream(nc: NATS, settings: Settings, stop: asyncio.Event, wait: bool) -> None:
    """Returns once the stream exists with our partition count; exits on a mismatch."""
    said = False
    while not stop.is_set():
        try:
            await check_partitions(nc.jetstream(), settings)
            return
        except NotFoundError:
            if not wait:
                raise SystemExit(
                    f"stream {settings.stream_name} does not exist (./just stream creates it)"
                ) from None
            if not said:
                log.warning(
                    "stream %s does not exist yet (./just stream creates it); waiting", settings.stream_name
                )
                said = True
        except (TimeoutError, nats.errors.Error) as exc:
            log.warning("cannot read stream %s yet (%s); retrying", settings.stream_name, exc)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 1.0)
    raise SystemExit(0)


async def _check_eviction(store: ProjectionStore) -> None:
    """A Redis that may evict keys would silently drop projections or dedup entries."""
    policy = await store.eviction_policy()
    if policy is None:
        log.warning(
            "cannot read Redis maxmemory-policy (CONFIG GET is not allowed); it must be noeviction, "
            "or Redis may silently drop counts and dedup entries"
        )
    elif policy != "noeviction":
        raise SystemExit(
            f"Redis maxmemory-policy is {policy}: it may evict projection and dedup keys. "
            "Refusing to start; set it to noeviction (CONFIG SET maxmemory-policy noeviction)"
        )


def _partitions(raw: str | None, settings: Settings) -> list[int]:
    if not raw:
        return list(range(settings.partitions))
    return [int(p) for p in raw.split(",")]
