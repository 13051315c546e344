"""Power losses in Hourglass's durable mode (`sync_interval: always`): the three nats-servers' stores
on LazyFS, which forgets every unsynced write when the power goes. One node losing power while the other
two are cut off in turn (Jepsen's composite): nothing acknowledged is lost. `./just faults --sync
always` runs all three power losses (all nodes at once too), and `--sync default` shows what the
default setting loses instead (docs/faults.md); .ci/run has 25 minutes in all."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from tests.faults.harness import Cluster, http_on, run_schedule, running_cluster
from tests.faults.schedules import SCHEDULES

pytestmark = pytest.mark.slow

SECONDS = 10.0


@pytest.fixture(scope="module")
async def cluster(fuse: None, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Cluster]:
    where = Path(tmp_path_factory.mktemp("power"))
    async with running_cluster(where, lazy_disks=True, sync_always=True) as found:
        yield found


@pytest.fixture(scope="module")
async def http(cluster: Cluster) -> AsyncIterator[httpx.AsyncClient]:
    async with http_on(cluster) as client:
        yield client


@pytest.mark.parametrize("name", ["power-loss-follower-then-leader-isolated"])
async def test_in_durable_mode_a_power_loss_loses_nothing_acknowledged(
    cluster: Cluster, http: httpx.AsyncClient, name: str
) -> None:
    seed = list(SCHEDULES).index(name) + 1
    row = await run_schedule(cluster, http, name, SECONDS, seed)
    print(f"\n{row.line()}")
    assert not row.stalled, row.stalled
    assert row.dropped, "the power loss dropped nothing: LazyFS was not under the stores"
    assert row.logged == row.acknowledged, row.line()
    assert row.lost == 0, row.line()
    assert row.doubled == 0, row.line()
    assert row.nodes_agree, row.line()
    assert row.audit == "clean", row.audit
    assert row.bad_reads == [], row.bad_reads[:5]
