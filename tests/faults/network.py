"""A network of the harness's own: a bridge, a namespace per node joined to it, and partitions by nftables.

Each node (a nats-server, the valkey-server, a projector) runs in a network namespace the harness
creates, with one veth pair to a bridge the harness creates; the test process reaches every node over
that bridge. A partition is an nftables table inside the namespaces concerned that drops what goes
between them, so no rule is ever set outside the harness's namespaces, and nothing is sent to an
address the harness did not give out. Several loopback addresses in one namespace would not do: a
connection between them always leaves from 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field

TABLE = "hourglass_faults"


class NoNetwork(Exception):
    """This machine does not let the harness build its network (not root, or no `ip`/`nft`)."""


@dataclass(frozen=True)
class Node:
    name: str
    namespace: str
    ip: str

    def argv(self, command: list[str]) -> list[str]:
        """`command` run inside the node's namespace."""
        return ["ip", "netns", "exec", self.namespace, *command]


def _run(*argv: str, stdin: str | None = None) -> None:
    done = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=30, check=False)
    if done.returncode != 0:
        raise NoNetwork(f"{' '.join(argv)}: {done.stderr.strip() or done.returncode}")


_created = itertools.count()


def _free_subnet() -> str:
    """A 10.97.N.0/24 that no route of this machine mentions (another harness's, say)."""
    routes = subprocess.run(["ip", "-4", "route"], capture_output=True, text=True, check=False).stdout
    for n in [*range(os.getpid() % 200 + 20, 250), *range(20, 250)]:
        if f"10.97.{n}." not in routes:
            return f"10.97.{n}"
    raise NoNetwork("no free 10.97.N.0/24")


@dataclass
class Network:
    tag: str
    subnet: str
    nodes: dict[str, Node] = field(default_factory=dict)
    cuts: set[tuple[str, str]] = field(default_factory=set)

    @property
    def bridge(self) -> str:
        return f"hg{self.tag}"

    @property
    def gateway(self) -> str:
        """The test process's own address on the bridge."""
        return f"{self.subnet}.1"

    @classmethod
    @contextlib.contextmanager
    def created(cls) -> Iterator[Network]:
        if os.geteuid() != 0:
            raise NoNetwork("network namespaces and nftables need root (CI runs as root)")
        # Unique per network, not only per process: a namespace still held by a process that has not
        # exited yet keeps its veth, whose name the next network of this process would then collide with.
        net = cls(tag=f"{os.getpid() % 100_000:05d}{next(_created) % 10}", subnet=_free_subnet())
        try:
            _run("ip", "link", "add", net.bridge, "type", "bridge")
            _run("ip", "addr", "add", f"{net.gateway}/24", "dev", net.bridge)
            _run("ip", "link", "set", net.bridge, "up")
            yield net
        finally:
            net.close()

    def add(self, name: str) -> Node:
        n = len(self.nodes) + 2
        node = Node(name, f"hg{self.tag}-{name}", f"{self.subnet}.{n}")
        outside = f"hg{self.tag}v{n}"
        _run("ip", "netns", "add", node.namespace)
        self.nodes[name] = node
        _run("ip", "link", "add", outside, "type", "veth", "peer", "name", "eth0", "netns", node.namespace)
        _run("ip", "link", "set", outside, "master", self.bridge)
        _run("ip", "link", "set", outside, "up")
        _run("ip", "-n", node.namespace, "addr", "add", f"{node.ip}/24", "dev", "eth0")
        _run("ip", "-n", node.namespace, "link", "set", "eth0", "up")
        _run("ip", "-n", node.namespace, "link", "set", "lo", "up")
        return node

    def cut(self, a: Node, b: Node) -> None:
        """Nothing passes between `a` and `b`, either way, until `heal`."""
        self.cuts |= {(a.name, b.name), (b.name, a.name)}
        self._apply()

    def isolate(self, node: Node, from_: list[Node]) -> None:
        for other in from_:
            if other != node:
                self.cuts |= {(node.name, other.name), (other.name, node.name)}
        self._apply()

    def heal(self) -> None:
        self.cuts.clear()
        self._apply()

    def _apply(self) -> None:
        """Each namespace's table, replaced whole: drop to and from the nodes it is cut from."""
        for node in self.nodes.values():
            peers = sorted({self.nodes[b].ip for a, b in self.cuts if a == node.name})
            script = [f"table inet {TABLE}", f"delete table inet {TABLE}"]
            if peers:
                addresses = ", ".join(peers)
                script += [
                    f"table inet {TABLE} {{",
                    f"  chain in {{ type filter hook input priority 0; ip saddr {{ {addresses} }} drop; }}",
                    f"  chain out {{ type filter hook output priority 0; ip daddr {{ {addresses} }} drop; }}",
                    "}",
                ]
            _run("ip", "netns", "exec", node.namespace, "nft", "-f", "-", stdin="\n".join(script) + "\n")

    def close(self) -> None:
        for n, node in enumerate(self.nodes.values(), start=2):
            # The host's end first: deleting it deletes the pair at once, even while a process that
            # has not exited yet still holds the namespace.
            subprocess.run(["ip", "link", "del", f"hg{self.tag}v{n}"], capture_output=True, check=False)
            subprocess.run(["ip", "netns", "del", node.namespace], capture_output=True, check=False)
        subprocess.run(["ip", "link", "del", self.bridge], capture_output=True, check=False)
        self.nodes.clear()
