"""Build processes of a replay (`python -m projector build`): the job each reads from its stdin, how the
replay starts one and reads its result, and the work done inside one."""

from __future__ import annotations

import asyncio
import os
import sys

import msgspec
from nats.aio.client import Client as NATS

from deploy.projections_client import ProjectionsClient
from deploy.settings import Settings
from projector.projections.snapshots import open_snapshots
from projector.projections.store import ProjectionStore
from projector.replay.partition_fold import fold_partitions
from projector.replay.reports import Built, ReplayRefused


class BuildJob(msgspec.Struct, frozen=True):
    """What a build process (`python -m projector build`) reads from its stdin: never from its
    arguments, which any user of the machine can list."""

    settings: dict[str, str]
    parent: int
    """The replay's pid: a build whose replay is gone stops."""
    generation: int
    partitions: list[int]
    after: list[int]
    dead_letters_above: list[int]


async def build_elsewhere(
    settings: Settings, gen: int, partitions: list[int], filed: dict[int, int], starts: dict[int, int]
) -> dict[int, Built]:
    """These partitions folded into `gen` by a build process of their own (one more core)."""
    job = BuildJob(
        settings.as_env(),
        os.getpid(),
        gen,
        partitions,
        [starts[p] for p in partitions],
        [filed[p] for p in partitions],
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "projector",
        "build",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        out, _ = await proc.communicate(msgspec.json.encode(job))
    finally:
        if proc.returncode is None:  # cancelled: another build failed, or the replay was stopped
            proc.kill()
            await proc.wait()
    if proc.returncode != 0:
        raise ReplayRefused(
            f"the build process for partitions {partitions} failed (exit {proc.returncode}); its log is above"
        )
    return msgspec.json.decode(out.splitlines()[-1], type=dict[int, Built])


async def build_partitions(job: BuildJob, nc: NATS, redis_client: ProjectionsClient) -> dict[int, Built]:
    """A build process's work: its partitions folded into the job's generation, as `replay` would."""
    settings = Settings.from_env(job.settings)
    store = ProjectionStore.from_settings(redis_client, settings)
    snapshots = await open_snapshots(nc, redis_client, settings)
    starts = dict(zip(job.partitions, job.after, strict=True))
    filed = dict(zip(job.partitions, job.dead_letters_above, strict=True))
    return await fold_partitions(
        settings, nc, store, job.generation, job.partitions, starts, filed, snapshots
    )
