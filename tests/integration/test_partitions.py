"""Network partitions and pauses under keyed load (issue 31's harness, short): each schedule ends with
every acknowledged event counted exactly once, the three JetStream nodes agreeing, the audit clean and
no read answering anything but 200 or 503. `./just faults --seconds 300` runs the long version."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from tests.faults.harness import Cluster, http_on, run_schedule, running_cluster
from tests.faults.schedules import SCHEDULES

pytestmark = pytest.mark.slow

SECONDS = 20.0
"""How long each fault lasts here; the load runs before, during and after it."""

IN_CI = ["projectors-from-redis"]
"""The schedule that found a loss; the test below cuts off the HTTP worker's own node. The others (a
minority leader alone or paused as in Jepsen's composite, rolling, a bridge, projectors cut off from
NATS, the two with a SIGKILL) run in `./just faults`, and the power losses in test_power_loss.py:
.ci/run has 25 minutes in all."""


@pytest.fixture(scope="module")
async def cluster(root: None, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Cluster]:
    async with running_cluster(Path(tmp_path_factory.mktemp("faults"))) as found:
        yield found


@pytest.fixture(scope="module")
async def http(cluster: Cluster) -> AsyncIterator[httpx.AsyncClient]:
    async with http_on(cluster) as client:
        yield client


@pytest.mark.parametrize("name", IN_CI)
async def test_a_schedule_of_faults_loses_and_doubles_nothing(
    cluster: Cluster, http: httpx.AsyncClient, name: str
) -> None:
    seed = list(SCHEDULES).index(name) + 1  # its own keys, users and closed hour
    row = await run_schedule(cluster, http, name, SECONDS, seed)
    print(f"\n{row.line()}")
    assert row.lost == 0, row.line()
    assert row.doubled == 0, row.line()
    assert row.logged == row.acknowledged, row.line()
    assert row.nodes_agree, row.line()
    assert row.audit == "clean", row.audit
    assert row.bad_reads == [], row.bad_reads[:5]


async def test_a_worker_whose_nats_server_is_cut_off_moves_to_another_and_keeps_acknowledging(
    cluster: Cluster, http: httpx.AsyncClient
) -> None:
    """Before ingest moved servers on PubAck timeouts, every POST through a worker whose server was
    cut off from the other two was a 503 until the heal (docs/faults.md)."""
    name = "ingest-node-isolated"
    row = await run_schedule(cluster, http, name, SECONDS, list(SCHEDULES).index(name) + 1)
    print(f"\n{row.line()}")
    assert row.during > 100, row.line()  # without the move: the few already in flight at the cut
    assert row.lost == 0, row.line()
    assert row.doubled == 0, row.line()
    assert row.nodes_agree, row.line()
    assert row.audit == "clean", row.audit
    assert row.bad_reads == [], row.bad_reads[:5]
