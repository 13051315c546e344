"""The compose examples (not run here: no container engine) keep the security the local stack has."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def services(name: str) -> dict[str, Any]:
    found: dict[str, Any] = yaml.safe_load((DEPLOY / name).read_text())["services"]
    return found


@pytest.mark.parametrize("name", ["compose.yaml", "compose.cluster.yaml"])
def test_only_the_http_port_is_published(name: str) -> None:
    published = {svc: spec["ports"] for svc, spec in services(name).items() if spec.get("ports")}
    assert published == {"http": ["8080:8080"]}


@pytest.mark.parametrize("name", ["compose.yaml", "compose.cluster.yaml"])
def test_servers_start_only_from_the_generated_configs_with_users(name: str) -> None:
    found = services(name)
    assert "deploy.credentials" in " ".join(found["secrets"]["command"])
    for svc, spec in found.items():
        command = " ".join(spec["command"])
        if spec["image"].startswith("nats"):
            assert "/data/secrets/nats" in command, svc
        elif spec["image"].startswith("redis"):
            assert "--aclfile /secrets/users.acl" in command, svc
        else:
            continue
        assert spec["depends_on"] == {"secrets": {"condition": "service_completed_successfully"}}, svc


def test_the_cluster_nodes_get_a_config_with_authenticated_routes() -> None:
    command = " ".join(services("compose.cluster.yaml")["secrets"]["command"])
    assert "--cluster-nodes nats-1,nats-2,nats-3" in command
    assert "cluster {" not in (DEPLOY / "nats-cluster.conf").read_text()  # only the generated one has routes
