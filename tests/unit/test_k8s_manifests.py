"""The Kubernetes manifests: valid against a current Kubernetes schema, and as safe as the local stack."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from deploy.settings import ROLES

K8S = Path(__file__).resolve().parents[2] / "deploy" / "k8s"
VERSION = kubernetes_validate.latest_version()


def documents() -> list[tuple[str, dict[str, Any]]]:
    out = []
    for path in sorted(K8S.glob("*.yaml")):
        if path.name != "kustomization.yaml":
            out += [
                (f"{path.name}:{doc['kind']}/{doc['metadata']['name']}", doc)
                for doc in yaml.safe_load_all(path.read_text())
                if doc
            ]
    return out


def of_kind(kind: str) -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for _, doc in documents() if doc["kind"] == kind}


@pytest.mark.parametrize(("name", "doc"), documents(), ids=[n for n, _ in documents()])
def test_each_resource_is_valid_against_the_kubernetes_schema(name: str, doc: dict[str, Any]) -> None:
    kubernetes_validate.validate(doc, VERSION, strict=True)


def test_the_kustomization_lists_every_file() -> None:
    listed = set(yaml.safe_load((K8S / "kustomization.yaml").read_text())["resources"])
    assert listed == {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}


def test_http_has_probes_on_healthz_and_readyz_and_a_service() -> None:
    container = of_kind("Deployment")["hourglass-http"]["spec"]["template"]["spec"]["containers"][0]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz/ingest"
    assert of_kind("Service")["hourglass-http"]["spec"]["selector"]["app.kubernetes.io/component"] == "http"
    assert set(of_kind("Service")) == {"hourglass-http"}  # nothing else is offered


def test_every_workload_runs_non_root_with_requests_and_only_its_roles_secret_as_files() -> None:
    pods = {
        name: d["spec"]["template"]["spec"] for name, d in {**of_kind("Deployment"), **of_kind("Job")}.items()
    }
    secrets = {
        "hourglass-http": "hourglass-http",
        "hourglass-projector": "hourglass-projector",
        "hourglass-audit": "hourglass-audit",
        "hourglass-stream": "hourglass-admin",
    }
    assert set(pods) == set(secrets)
    for name, pod in pods.items():
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        (container,) = pod["containers"]
        assert container["resources"]["requests"]["cpu"]
        assert container["resources"]["requests"]["memory"]
        assert container["securityContext"]["readOnlyRootFilesystem"] is True, name
        mounted = [v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v]
        assert mounted == [secrets[name]], name
        assert all("valueFrom" not in e for e in container.get("env", [])), (
            f"{name}: secret in the environment"
        )
    assert set(of_kind("Secret")) == set(secrets.values())


def test_each_roles_secret_holds_exactly_the_files_that_role_reads() -> None:
    for role, (nats_user, api_user, redis_user) in ROLES.items():
        wanted = {f"nats-{nats_user}.url"} | {f"nats-{u}.url" for u in [api_user] if u}
        wanted |= {f"redis-{u}.url" for u in [redis_user] if u}
        assert set(of_kind("Secret")[f"hourglass-{role}"]["stringData"]) == wanted, role


def test_network_policies_deny_every_ingress_but_the_http_port() -> None:
    policies = of_kind("NetworkPolicy")
    deny = policies["hourglass-default-deny"]["spec"]
    assert deny["podSelector"] == {}
    assert "Ingress" in deny["policyTypes"]
    assert "ingress" not in deny
    (allowed,) = [p["spec"] for name, p in policies.items() if name != "hourglass-default-deny"]
    assert allowed["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "http"
    assert [port["port"] for rule in allowed["ingress"] for port in rule["ports"]] == [8080]
