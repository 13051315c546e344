"""Command line of the projector: `run`, `replay`, `inspect`, `stream` (and `build`, replay's helper)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys

import msgspec
import nats
import nats.errors
from nats.aio.client import Client as NATS
from nats.js.errors import NotFoundError
from redis.asyncio import Redis

from contract.backoff import with_backoff
from contract.hours import parse_hour_token
from contract.settings import Settings, redacted
from projector import metrics
from projector.cli.inspect_view import inspect_view
from projector.live.balancer import run_projector
from projector.log.stream_config import check_partitions, ensure_stream
from projector.projections.store import ProjectionStore
from projector.replay.build_processes import BuildJob, build_partitions
from projector.replay.driver import replay
from projector.replay.reports import ReplayRefused
from projector.replay.single_hour import replay_hour

log = logging.getLogger("projector")


async def _connect(settings: Settings, name: str, wait: bool) -> NATS:
    options = settings.nats_options(name)
    if wait:
        return await with_backoff(
            lambda: nats.connect(**options), NATS_DOWN, f"NATS at {redacted(settings.nats_url)}", log
        )
    try:
        return await nats.connect(**options)
    except NATS_DOWN as exc:
        raise SystemExit(f"cannot reach NATS at {redacted(settings.nats_url)}: {exc}") from exc


NATS_DOWN = (TimeoutError, nats.errors.Error, OSError)


async def _build(job: BuildJob) -> int:
    """A build process of a replay: fold the job's partitions, print what was built, as JSON."""
    settings = Settings.from_env(job.settings)
    watching = asyncio.create_task(_exit_with_parent(job.parent))
    await asyncio.sleep(0)  # the first look, before anything is written
    nc = await _connect(settings, "hourglass-replay-build", wait=False)
    redis_client = Redis.from_url(**settings.redis_options())
    try:
        built = await build_partitions(job, nc, redis_client)
    finally:
        watching.cancel()
        await redis_client.aclose()
        await nc.close()
    sys.stdout.buffer.write(msgspec.json.encode(built) + b"\n")
    return 0


async def _exit_with_parent(parent: int) -> None:
    """A build outliving its replay (killed) would write into a generation the next replay drops."""
    while True:
        if os.getppid() != parent:
            break
        await asyncio.sleep(0.5)
    log.error("the replay that started this build is gone; stopping")
    os._exit(3)


async def _main(args: argparse.Namespace) -> int:
    # The stream's configuration is the admin's to change; everything else runs as the projector.
    settings = Settings.from_env(role="admin" if args.command == "stream" else "projector")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    nc = await _connect(settings, f"hourglass-{args.command}", wait=args.command in ("run", "stream"))
    if args.command == "stream":
        try:
            print(await ensure_stream(nc, settings))
        finally:
            await nc.close()
        return 0
    if args.command in ("run", "replay"):
        # Before anything touches Redis: a projector with the wrong partition count must write nothing.
        await _wait_for_stream(nc, settings, stop, wait=args.command == "run")
    redis_client = Redis.from_url(**settings.redis_options())
    try:
        if args.command in ("run", "replay"):
            await _check_eviction(ProjectionStore.from_settings(redis_client, settings))
        if args.command == "run":
            metrics.serve(settings.projector_metrics_port)
            partitions = _partitions(args.partitions, settings)
            log.info("projecting partitions %s of %s", partitions, settings.stream_name)
            await run_projector(settings, nc, redis_client, stop, partitions)
        elif args.command == "replay" and args.hour:
            hour = parse_hour_token(args.hour)
            report = await replay_hour(settings, nc, redis_client, hour)
            print(
                f"rebuilt hour {args.hour} from {report.events} events ({report.messages} messages) "
                f"in {report.seconds:.2f}s"
            )
        elif args.command == "replay":
            report = await replay(settings, nc, redis_client)
            print(
                f"replayed {report.events} events ({report.messages} messages) into generation "
                f"{report.generation} in {report.seconds:.2f}s; generation {report.previous} retired"
            )
        else:
            sys.stdout.write(await inspect_view(settings, nc, last=args.last))
    except ReplayRefused as exc:
        raise SystemExit(f"replay refused: {exc}") from None
    finally:
        await redis_client.aclose()
        await nc.close()
    return 0


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


def main() -> None:
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
    sub.add_parser("build", help="(started by replay) fold the partitions of a job read from stdin")
    args = parser.parse_args()
    logging.basicConfig(
        level=logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if args.command == "build":
        sys.exit(asyncio.run(_build(msgspec.json.decode(sys.stdin.buffer.read(), type=BuildJob))))
    sys.exit(asyncio.run(_main(args)))


if __name__ == "__main__":
    main()
