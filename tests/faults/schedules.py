"""The fault schedules: what each does to the cluster while the load runs, then heals; the harness runs
them and the checker judges the outcome."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tests.faults.harness import Cluster

Schedule = Callable[["Cluster", float], Awaitable[None]]


async def _hold(seconds: float) -> None:
    await asyncio.sleep(seconds)  # the fault's duration: time the load runs against it, not a wait


async def leader_isolated(cluster: Cluster, seconds: float) -> None:
    """The stream's leader cut off from the other two nodes (clients still reach it), then healed."""
    leader = cluster.nats_node(await cluster.leader())
    cluster.net.isolate(leader, [p.node for p in cluster.nats.values()])
    await _hold(seconds)
    cluster.net.heal()


INGEST_CLIENT = "hourglass-http"
"""The NATS connection name of the HTTP app's worker."""


async def ingest_node_isolated(cluster: Cluster, seconds: float) -> None:
    """The node the HTTP worker is connected to cut off from the other two (the worker still reaches
    it), then healed: the worker must move to another node to get PubAcks meanwhile."""
    name = cluster.serving(INGEST_CLIENT)
    assert name is not None, f"no node serves {INGEST_CLIENT}"
    cluster.net.isolate(cluster.nats_node(name), [p.node for p in cluster.nats.values()])
    await _hold(seconds)
    cluster.net.heal()


async def rolling(cluster: Cluster, seconds: float) -> None:
    """Each node in turn cut off from the other two, a third of the time each."""
    for process in cluster.nats.values():
        cluster.net.isolate(process.node, [p.node for p in cluster.nats.values()])
        await _hold(seconds / 3)
        cluster.net.heal()


async def bridge(cluster: Cluster, seconds: float) -> None:
    """Two nodes that cannot see each other, and one (the leader) that sees both."""
    leader = await cluster.leader()
    a, b = (p.node for name, p in cluster.nats.items() if name != leader)
    cluster.net.cut(a, b)
    await _hold(seconds)
    cluster.net.heal()


async def projectors_from_redis(cluster: Cluster, seconds: float) -> None:
    """Both projectors cut off from Valkey while they still read NATS."""
    for process in cluster.projectors.values():
        cluster.net.cut(process.node, cluster.valkey.node)
    await _hold(seconds)
    cluster.net.heal()


async def projectors_from_nats(cluster: Cluster, seconds: float) -> None:
    """Both projectors cut off from every NATS node while their leases in Valkey are still valid."""
    for process in cluster.projectors.values():
        for server in cluster.nats.values():
            cluster.net.cut(process.node, server.node)
    await _hold(seconds)
    cluster.net.heal()


async def leader_paused_and_isolated(cluster: Cluster, seconds: float) -> None:
    """Jepsen's composite: the leader SIGSTOPped, cut off while stopped, resumed still cut off, healed."""
    name = await cluster.leader()
    leader = cluster.nats[name]
    leader.signal(signal.SIGSTOP)
    cluster.net.isolate(leader.node, [p.node for p in cluster.nats.values()])
    await _hold(seconds / 2)
    leader.signal(signal.SIGCONT)
    await _hold(seconds / 2)
    cluster.net.heal()


async def leader_killed_while_isolated(cluster: Cluster, seconds: float) -> None:
    """The leader cut off, then SIGKILLed, restarted on its store while still cut off, then healed."""
    leader = cluster.nats[await cluster.leader()]
    cluster.net.isolate(leader.node, [p.node for p in cluster.nats.values()])
    await _hold(seconds / 3)
    leader.kill()
    await _hold(seconds / 3)
    leader.start()
    await _hold(seconds / 3)
    cluster.net.heal()


async def projector_killed_while_cut_off(cluster: Cluster, seconds: float) -> None:
    """Both projectors cut off from Valkey; one SIGKILLed meanwhile and restarted; then healed."""
    for process in cluster.projectors.values():
        cluster.net.cut(process.node, cluster.valkey.node)
    await _hold(seconds / 2)
    victim = cluster.projectors["p1"]
    victim.kill()
    victim.start()
    await _hold(seconds / 2)
    cluster.net.heal()


async def power_loss_leader(cluster: Cluster, seconds: float) -> None:
    """The leader's machine loses power (its unsynced writes gone) and comes back later on its disk."""
    name = await cluster.leader()
    await _hold(seconds / 2)
    cluster.lose_power([name])
    await _hold(seconds / 2)
    cluster.nats[name].start()


async def power_loss_all(cluster: Cluster, seconds: float) -> None:
    """Every node loses power at once; all come back on what their disks kept."""
    await _hold(seconds / 2)
    cluster.lose_power(list(cluster.nats))
    await _hold(seconds / 4)
    for process in cluster.nats.values():
        process.start()
    await _hold(seconds / 4)


async def power_loss_follower_then_leader_isolated(cluster: Cluster, seconds: float) -> None:
    """Jepsen's composite (nats-server issue 7564): one follower cut off while the leader and the other
    follower acknowledge; that other follower loses power and comes back while the leader is cut off,
    so the majority is the node that missed the writes and the node whose disk forgot them."""
    leader = await cluster.leader()
    missed, forgot = (name for name in cluster.nats if name != leader)
    everyone = [p.node for p in cluster.nats.values()]
    cluster.net.isolate(cluster.nats_node(missed), everyone)
    await _hold(seconds / 3)
    cluster.lose_power([forgot])
    cluster.net.heal()
    cluster.net.isolate(cluster.nats_node(leader), everyone)
    cluster.nats[forgot].start()
    await _hold(seconds / 3)
    cluster.net.heal()
    await _hold(seconds / 3)


SCHEDULES: dict[str, Schedule] = {
    "leader-isolated": leader_isolated,
    "ingest-node-isolated": ingest_node_isolated,
    "rolling": rolling,
    "bridge": bridge,
    "projectors-from-redis": projectors_from_redis,
    "projectors-from-nats": projectors_from_nats,
    "leader-paused-and-isolated": leader_paused_and_isolated,
    "leader-killed-while-isolated": leader_killed_while_isolated,
    "projector-killed-while-cut-off": projector_killed_while_cut_off,
    "power-loss-leader": power_loss_leader,
    "power-loss-follower-then-leader-isolated": power_loss_follower_then_leader_isolated,
    "power-loss-all": power_loss_all,
}

ON_LAZY_DISKS = frozenset(name for name in SCHEDULES if name.startswith("power-loss"))
"""Schedules that cut the power: their cluster's stores run on LazyFS (`tests/faults/lazyfs.py`)."""
