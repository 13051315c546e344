"""What one JetStream node holds of a stream, message by message, as one hash: direct gets sent
through a connection to that node alone are answered by its own replica (NATS hands a request to a
local queue subscriber first), so two nodes with equal state but different messages differ here."""

from __future__ import annotations

import contextlib
import hashlib
import json

import nats
from nats.aio.client import Client as NATS

BATCH = 1000


async def node_digest(url: str, stream: str, last_seq: int) -> str:
    """SHA-256 over (sequence, subject, data) of every message up to `last_seq` that the node at `url`
    serves. Raises TimeoutError when the node does not answer."""
    nc: NATS = await nats.connect(servers=[url], name="faults-digest", allow_reconnect=False)
    digest = hashlib.sha256()
    try:
        inbox = nc.new_inbox()
        sub = await nc.subscribe(inbox)
        seq = 1
        while seq <= last_seq:
            request = {"seq": seq, "batch": min(BATCH, last_seq - seq + 1)}
            await nc.publish(f"$JS.API.DIRECT.GET.{stream}", json.dumps(request).encode(), reply=inbox)
            got = 0
            while True:
                msg = await sub.next_msg(timeout=10)
                headers = msg.headers or {}
                if "Nats-Sequence" not in headers:
                    break  # the end of the batch (204) or nothing at or after `seq` (404)
                at = int(headers["Nats-Sequence"])
                digest.update(f"{at}\0{headers.get('Nats-Subject', '')}\0".encode())
                digest.update(msg.data)
                seq, got = at + 1, got + 1
            if got == 0:
                break
    finally:
        with contextlib.suppress(Exception):
            await nc.close()
    return digest.hexdigest()
