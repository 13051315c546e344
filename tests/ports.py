"""Ports for the servers tests start: none handed out twice in a run, none an outgoing connection can take.

A port found free and bound later by a server can be taken in between; the kernel hands out its
ephemeral range (ip_local_port_range) to outgoing connections and to other `bind(0)` callers, and may
give a port just released to the next caller. So ports come from below that range, are remembered for
the whole run, and come with their port + 10000 free too (a Valkey cluster node's bus port).
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

BUS_OFFSET = 10_000
_handed: set[int] = set()
_pick = random.Random()


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32_768


LOW = 10_000
HIGH = min(20_000, _ephemeral_low() - BUS_OFFSET)
"""Ports in [LOW, HIGH), buses in [LOW + 10000, HIGH + 10000): all below the ephemeral range, and no
port is another's bus."""


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def free_port() -> int:
    """A port nothing listens on, never handed out before in this run, whose bus port is free too."""
    for _ in range(2_000):
        port = _pick.randrange(LOW, HIGH)
        if port not in _handed and _bindable(port) and _bindable(port + BUS_OFFSET):
            _handed.add(port)
            return port
    raise RuntimeError(f"no free port in {LOW}-{HIGH - 1} after 2000 tries")
