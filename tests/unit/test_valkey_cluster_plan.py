"""What `./just cluster-up` runs for a Valkey cluster, and how running nodes are split into primaries."""

from __future__ import annotations

from pathlib import Path

import pytest

from deploy.redis_nodes import parse_redis_nodes
from deploy.settings import Settings
from deploy.supervisor import VALKEY_CLUSTER_URL
from deploy.valkey_cluster import FormError, form_command, plan, valkey_nodes


def test_cluster_up_runs_six_cluster_nodes_then_forms_them(tmp_path: Path) -> None:
    settings = Settings(redis_url=VALKEY_CLUSTER_URL)
    acl = tmp_path / "secrets" / "users.acl"
    acl.parent.mkdir()
    nodes = valkey_nodes(settings, tmp_path, acl, "pw")
    assert [(name, port) for name, _, port in nodes] == [(f"valkey{i}", 7000 + i) for i in range(1, 7)]
    for _, argv, port in nodes:
        assert argv[argv.index("--cluster-enabled") + 1] == "yes"
        assert argv[argv.index("--cluster-config-file") + 1] == str(
            tmp_path / f"valkey-{port}" / "nodes.conf"
        )
        assert argv[argv.index("--aclfile") + 1] == str(acl)
        assert "pw" not in argv  # the replicas' password is in a 0600 file, not on the command line
    assert (acl.parent / "valkey-replication.conf").stat().st_mode & 0o077 == 0
    forming = form_command(settings)
    assert forming is not None
    assert forming[1:] == ["-m", "deploy.valkey_cluster", "form", "--replicas", "1"]


def test_up_keeps_its_one_node(tmp_path: Path) -> None:
    settings = Settings()
    assert form_command(settings) is None
    nodes = valkey_nodes(settings, tmp_path, tmp_path / "users.acl", "pw")
    assert [(name, port) for name, _, port in nodes] == [("valkey", 6379)]
    assert "--cluster-enabled" not in nodes[0][1]
    assert not valkey_nodes(Settings(redis_url="redis://10.0.0.1:6379/0"), tmp_path, tmp_path, "pw")


def test_the_first_nodes_are_primaries_and_the_rest_replicate_them_in_turn() -> None:
    nodes = parse_redis_nodes(VALKEY_CLUSTER_URL)
    layout = plan(nodes, replicas=1, partitions=4)
    assert [n.port for n in layout.primaries] == [7001, 7002, 7003]
    assert {r.port: p.port for r, p in layout.replicas.items()} == {7004: 7001, 7005: 7002, 7006: 7003}
    with pytest.raises(FormError, match="5 nodes cannot make primaries with 1 replicas each"):
        plan(nodes[:5], replicas=1, partitions=4)
