"""The compose stacks (run for real by tests/integration/test_containers.py) keep the security the local
stack has: one published port, servers only from the generated configs with users, secrets as files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
FILES = ["compose.yaml", "compose.cluster.yaml"]
FRONT = {"compose.yaml": "http", "compose.cluster.yaml": "balancer"}


def services(name: str) -> dict[str, Any]:
    found: dict[str, Any] = yaml.safe_load((DEPLOY / name).read_text())["services"]
    return found


@pytest.mark.parametrize("name", FILES)
def test_only_the_http_port_is_published(name: str) -> None:
    published = {svc: spec["ports"] for svc, spec in services(name).items() if spec.get("ports")}
    assert published == {FRONT[name]: ["${HOURGLASS_HTTP_PORT:-8080}:8080"]}


@pytest.mark.parametrize("name", FILES)
def test_servers_start_only_from_the_generated_configs_with_users(name: str) -> None:
    found = services(name)
    assert "deploy.credentials" in " ".join(found["secrets"]["command"])
    servers = 0
    for svc, spec in found.items():
        command = " ".join(spec["command"])
        if "nats-server" in command:
            assert "-c /data/secrets/nats" in command, svc
        elif "valkey-server" in command:
            assert "--aclfile /data/secrets/users.acl" in command, svc
        else:
            continue
        servers += 1
        # They start once the credentials are written (no depends_on: see the compose files' header).
        assert command.startswith("python3 -m deploy.after_secrets "), svc
    assert servers == (2 if name == "compose.yaml" else 3 + 6)


@pytest.mark.parametrize("name", FILES)
def test_secrets_are_files_in_a_volume_never_in_the_environment(name: str) -> None:
    text = (DEPLOY / name).read_text().lower()
    assert "password" not in text
    assert "@" not in text.replace("${", "")  # no user:password@host anywhere
    for svc, spec in services(name).items():
        if svc not in ("secrets", "balancer"):
            assert any(v.startswith("secrets:/data/secrets") for v in spec["volumes"]), svc
        for value in (spec.get("environment") or {}).values():
            assert "://" not in str(value) or "@" not in str(value), svc


@pytest.mark.parametrize("name", FILES)
def test_every_long_running_service_restarts_and_the_http_one_checks_readyz(name: str) -> None:
    for svc, spec in services(name).items():
        if svc not in ("secrets", "stream", "valkey-form"):  # one-shots
            assert spec["restart"] == "unless-stopped", svc
        assert "depends_on" not in spec, svc
    http = [spec for svc, spec in services(name).items() if svc.startswith("http")]
    assert http
    assert all("/readyz/ingest'" in " ".join(spec["healthcheck"]["test"]) for spec in http)


def test_the_cluster_nodes_get_a_config_with_authenticated_routes() -> None:
    command = " ".join(services("compose.cluster.yaml")["secrets"]["command"])
    assert "--cluster-nodes nats-1,nats-2,nats-3" in command
    assert "cluster {" not in (DEPLOY / "nats-cluster.conf").read_text()  # only the generated one has routes


def test_the_cluster_stack_runs_a_valkey_cluster_every_process_lists() -> None:
    found = services("compose.cluster.yaml")
    nodes = [svc for svc in found if svc.startswith("valkey-") and svc != "valkey-form"]
    assert nodes == [f"valkey-{i}" for i in range(1, 7)]
    for svc in nodes:
        command = " ".join(found[svc]["command"])
        assert "--cluster-enabled yes" in command, svc
        # The replicas' credentials from a config file, so a restarted node keeps them.
        assert "valkey-server /data/secrets/valkey-replication.conf " in command, svc
        assert f"--cluster-announce-hostname {svc}" in command, svc
        assert f"{svc}:/data/valkey" in found[svc]["volumes"], svc
    assert "--valkey-replication" in found["secrets"]["command"]
    assert "deploy.valkey_cluster form --replicas 1" in " ".join(found["valkey-form"]["command"])
    listed = ",".join(f"redis://{svc}:6379" for svc in nodes)
    apps = [svc for svc, spec in found.items() if "ANALYTICS_NATS_URL" in (spec.get("environment") or {})]
    assert {"http-1", "http-2", "projector-1", "projector-2", "audit", "stream", "valkey-form"} <= set(apps)
    for svc in apps:
        assert found[svc]["environment"]["ANALYTICS_REDIS_URL"] == listed, svc


def test_the_cluster_balancer_is_haproxy_as_non_root_with_client_addresses_and_readyz_checks() -> None:
    found = services("compose.cluster.yaml")
    balancer = found["balancer"]
    assert balancer["command"] == ["haproxy", "-db", "-f", "/app/deploy/haproxy.cfg"]
    assert "user" not in balancer  # the image's uid 10001
    address = balancer["networks"]["default"]["ipv4_address"]
    assert address == "${HOURGLASS_SUBNET:-10.89.177}.200"
    for svc in ("http-1", "http-2"):
        assert found[svc]["environment"]["ANALYTICS_TRUSTED_PROXIES"] == address, svc
    for svc, spec in found.items():  # only the servers behind it trust X-Forwarded-For
        if not svc.startswith("http-"):
            assert "ANALYTICS_TRUSTED_PROXIES" not in (spec.get("environment") or {}), svc
    config = [line.split("#")[0].split() for line in (DEPLOY / "haproxy.cfg").read_text().splitlines()]
    lines = [" ".join(words) for words in config if words]
    assert not {"user", "group", "chroot", "uid", "gid"} & {words[0] for words in config if words}
    binds = [line for line in lines if line.startswith("bind ")]
    assert binds == ["bind :8080"]  # no port below 1024: no privilege needed
    for wanted in ("mode http", "option forwardfor", "balance roundrobin", "option http-keep-alive",
                   "option httpchk",
                   "http-check send meth GET uri /readyz/ingest ver HTTP/1.1 hdr Host balancer",
                   "http-check expect status 200"):  # fmt: skip
        assert wanted in lines, wanted
    assert all(f"timeout {t}" in " ".join(lines) for t in ("connect", "client", "server", "http-request"))
    checked = [line for line in lines if line.startswith("server ") and line.endswith(" check")]
    assert [line.split()[2] for line in checked] == ["http-1:8080", "http-2:8080"]
    assert "Retry-After" in " ".join(line for line in lines if line.startswith("http-error status 503"))
    # None ready: the servers answer anyway (their own 503 naming what they lack, GETs Redis can serve).
    assert "option allbackups" in lines
    backups = [line.split()[2:] for line in lines if line.startswith("server ") and "backup" in line]
    assert backups == [["http-1:8080", "backup"], ["http-2:8080", "backup"]]
