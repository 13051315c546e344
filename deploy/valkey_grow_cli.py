"""The growth commands of `python -m deploy.valkey_cluster`: node, add, move and rebalance."""

from __future__ import annotations

import argparse
from typing import Any

import redis

from contract.redis_nodes import RedisNode
from contract.settings import Settings, SettingsError
from deploy.valkey_cluster import FormError
from deploy.valkey_grow import add_node, exec_node, move_partition, reachable, rebalance, with_credentials


def add_commands(sub: Any) -> None:
    """The growth subcommands on `python -m deploy.valkey_cluster`'s parser."""
    cmd = sub.add_parser("node", help="run one more local node like cluster-up's (foreground)")
    cmd.add_argument("--port", type=int, required=True, help="client port (the bus port is +10000)")
    cmd = sub.add_parser("add", help="join a running empty node: a primary without slots, or a replica")
    cmd.add_argument("url", metavar="URL", help="the new node (credentials: ANALYTICS_REDIS_URL's)")
    cmd.add_argument("--replica-of", metavar="URL", help="the primary it replicates")
    cmd.add_argument("--timeout", type=float, default=60.0)
    cmd = sub.add_parser("move", help="move a partition's slots to a primary (atomic slot migration)")
    cmd.add_argument("--partition", type=int, required=True)
    cmd.add_argument("--to", required=True, metavar="URL", help="the primary to move it to")
    cmd.add_argument("--partitions", type=int, help="default: ANALYTICS_PARTITIONS")
    cmd.add_argument("--timeout", type=float, default=300.0)
    cmd = sub.add_parser("rebalance", help="move whole partitions until each primary holds an equal share")
    cmd.add_argument("--partitions", type=int, help="default: ANALYTICS_PARTITIONS")
    cmd.add_argument("--timeout", type=float, default=300.0, help="seconds for each move")


def run(args: argparse.Namespace) -> str | None:
    """Run one growth command: None when it succeeded, else the one line to exit with."""
    try:
        settings = Settings.from_env(role="admin")
        if args.command == "node":
            exec_node(settings, args.port)
            return None
        cluster = reachable(settings.redis_nodes())
        partitions = getattr(args, "partitions", None) or settings.partitions
        print(_one(args, cluster, partitions))
    except (SettingsError, ValueError, FormError, redis.RedisError, OSError) as exc:
        return f"valkey cluster: {exc}"
    return None


def _one(args: argparse.Namespace, cluster: RedisNode, partitions: int) -> str:
    if args.command == "add":
        new = with_credentials(args.url, cluster)
        primary = with_credentials(args.replica_of, cluster) if args.replica_of else None
        role = f"a replica of {primary.address}" if primary else "a primary without slots"
        done = add_node(cluster, new, primary, args.timeout)
        return f"{new.address} " + ("joined as " if done else "was already ") + role
    if args.command == "move":
        target = with_credentials(args.to, cluster)
        moved = move_partition(cluster, args.partition, partitions, target, args.timeout)
        if moved is None:
            return f"partition {args.partition} is already on {target.address}"
        return f"partition {args.partition} (slots {moved[0]}-{moved[1]}) moved to {target.address}"
    moves = rebalance(cluster, partitions, args.timeout)
    if not moves:
        return "the partitions are balanced already"
    return "; ".join(f"partition {p} moved to {address}" for p, address in moves)
