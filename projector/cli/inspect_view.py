"""`./just inspect`: the stream, its hour subjects, the projector consumers and the last events, readably."""

from __future__ import annotations

import datetime as dt
from typing import Any

import redis.exceptions
from nats.aio.client import Client as NATS
from nats.js.errors import KeyNotFoundError, NotFoundError

from contract import schema
from contract.buckets import is_day_token
from contract.slots import partitions_in
from contract.stream import consumer_name, snapshot_bucket, snapshot_manifest_key
from deploy.projections_client import node_client
from deploy.settings import Settings


async def inspect_view(settings: Settings, nc: NATS, last: int = 10) -> str:
    js = nc.jetstream()
    lines: list[str] = []
    try:
        info = await js.stream_info(settings.stream_name, subjects_filter=">")
    except NotFoundError:
        return f"stream {settings.stream_name} does not exist yet (start the stack: ./just up)\n"
    state = info.state
    lines.append(
        f"stream {settings.stream_name}: {state.messages} messages, {state.bytes} bytes, "
        f"seq {state.first_seq}..{state.last_seq}, subjects {', '.join(info.config.subjects or [])}, "
        f"R{info.config.num_replicas or 1}"
        + (f", leader {info.cluster.leader}" if info.cluster and info.cluster.leader else "")
    )
    lines.append("")
    lines.append("messages per hour subject (<prefix>.<YYYYMMDDHH>.<partition>):")
    subjects = state.subjects or {}
    for name in sorted(subjects):
        lines.append(f"  {name:<40} {subjects[name]:>10}")
    lines.append("")
    lines.append("projector consumers (durable, one per partition):")
    for partition in range(settings.partitions):
        name = consumer_name(partition)
        try:
            c = await js.consumer_info(settings.stream_name, name)
        except NotFoundError:
            lines.append(f"  {name:<16} (not created yet: is a projector running?)")
            continue
        acked = c.ack_floor.stream_seq if c.ack_floor else 0
        lines.append(
            f"  {name:<16} lag {c.num_pending or 0:>8} unprocessed, {c.num_ack_pending or 0:>6} in flight, "
            f"acked up to seq {acked}"
        )
    lines.append("")
    lines.append(f"snapshots ({snapshot_bucket(settings.stream_name)}):")
    try:
        kv = await js.key_value(snapshot_bucket(settings.stream_name))
        for partition in range(settings.partitions):
            try:
                entry = await kv.get(snapshot_manifest_key(partition))
                manifest = schema.unpack_manifest(entry.value or b"")
                days = sum(1 for token in manifest.hours if is_day_token(token))
                hours = len(manifest.hours) - days
                lines.append(
                    f"  p{partition}: at stream seq {manifest.watermark}, {hours} hours, {days} day rollups"
                )
            except KeyNotFoundError:
                lines.append(f"  p{partition}: none yet")
    except NotFoundError:
        lines.append("  (no bucket: ./just stream creates it)")
    lines.append("")
    lines.append(f"last {last} messages:")
    seq = state.last_seq
    while seq >= state.first_seq and seq > 0 and last > 0:
        try:
            raw = await js.get_msg(settings.stream_name, seq)
        except NotFoundError:
            seq -= 1
            continue
        batch = schema.decode(raw.data or b"")
        lines.append(f"  #{seq} {raw.subject}  ({len(batch.events)} event(s))")
        for event in batch.events:
            when = dt.datetime.fromtimestamp(event.ts / 1000, tz=dt.UTC).isoformat(timespec="milliseconds")
            key = f" key={event.key}" if event.key else ""
            lines.append(f"      {when} {event.kind.value:<10} user={event.user!r}{key}")
        seq -= 1
        last -= 1
    return "\n".join(lines) + "\n"


async def cluster_view(settings: Settings) -> str:
    """In cluster mode: each node's address, role, slot ranges and the partitions living there."""
    if not settings.redis_cluster:
        return ""
    rows: list[dict[str, Any]] = []
    for node in settings.redis_nodes():  # the first node that answers knows them all
        client = node_client(settings, node)
        try:
            parsed = await client.execute_command("CLUSTER NODES")  # type: ignore[no-untyped-call]
            rows = [{**row, "address": str(at)} for at, row in dict(parsed).items()]
            break
        except redis.exceptions.RedisError:
            continue
        finally:
            await client.aclose()
    if not rows:
        return "\nvalkey cluster: no listed node answers\n"
    address = {row["node_id"]: _address(row) for row in rows}
    lines = ["", f"valkey cluster ({len(rows)} nodes; partition slots from the tag {{p<N>}}):"]
    for row in sorted(rows, key=lambda r: (r["master_id"] != "-", _address(r))):
        flags = row["flags"]
        if "master" in flags:
            spans = [(int(low), int(high)) for low, high in row["slots"]]
            slots = ", ".join(f"{low}-{high}" if low != high else str(low) for low, high in spans) or "none"
            parts = sorted(p for low, high in spans for p in partitions_in(low, high, settings.partitions))
            owned = ", ".join(map(str, parts)) or "none"
            role = f"primary  slots {slots}  partitions {owned}"
        else:
            role = f"replica of {address.get(row['master_id'], row['master_id'])}"
        state = "" if row.get("connected", True) and "fail" not in flags else f"  ({flags})"
        lines.append(f"  {_address(row):<22} {role}{state}")
    return "\n".join(lines) + "\n"


def _address(row: dict[str, Any]) -> str:
    """`ip:port` as the node announces itself (redis-py keys CLUSTER NODES by it)."""
    return str(row["address"])
