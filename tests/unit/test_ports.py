"""The ports `./just up` checks before it starts anything, and how it names them; the data dir it locks."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from deploy.ports import Port, claim, planned, problems
from deploy.settings import Settings
from tests.ports import free_port


def test_the_default_stack_binds_these_ports_each_moved_by_its_variable() -> None:
    found = {(p.port, p.variable) for p in planned(Settings(), projectors=1)}
    assert found == {
        (4222, "ANALYTICS_NATS_URL"),
        (6379, "ANALYTICS_REDIS_URL"),
        (8080, "ANALYTICS_HTTP_PORT"),
        (9180, "ANALYTICS_ADMIN_PORT"),
    }


def test_a_cluster_checks_each_node_and_its_route_port_and_projectors_their_metrics() -> None:
    url = "nats://127.0.0.1:4222,nats://127.0.0.1:4223,nats://127.0.0.1:4224"
    settings = Settings(nats_url=url, admin_port=0, projector_metrics_port=9300)
    found = {(p.port, p.variable, p.what) for p in planned(settings, projectors=2)}
    assert found == {
        (4222, "ANALYTICS_NATS_URL", ""),
        (4223, "ANALYTICS_NATS_URL", ""),
        (4224, "ANALYTICS_NATS_URL", ""),
        (6222, "ANALYTICS_NATS_URL", "cluster routes of 4222"),
        (6223, "ANALYTICS_NATS_URL", "cluster routes of 4223"),
        (6224, "ANALYTICS_NATS_URL", "cluster routes of 4224"),
        (6379, "ANALYTICS_REDIS_URL", ""),
        (8080, "ANALYTICS_HTTP_PORT", ""),
        (9300, "ANALYTICS_PROJECTOR_METRICS_PORT", "projector 1"),
        (9301, "ANALYTICS_PROJECTOR_METRICS_PORT", "projector 2"),
    }


def test_servers_elsewhere_are_not_ours_to_check() -> None:
    settings = Settings(nats_url="nats://nats.example:4222", redis_url="redis://cache.example:6379/0")
    assert [p.variable for p in planned(settings, projectors=1)] == [
        "ANALYTICS_HTTP_PORT",
        "ANALYTICS_ADMIN_PORT",
    ]


def test_problems_name_a_taken_port_and_a_port_set_twice() -> None:
    free, taken = free_port(), socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    busy = taken.getsockname()[1]
    try:
        found = problems(
            [
                Port("127.0.0.1", free, "ANALYTICS_HTTP_PORT"),
                Port("127.0.0.1", busy, "ANALYTICS_NATS_URL", "cluster routes of 4222"),
                Port("127.0.0.1", free, "ANALYTICS_ADMIN_PORT"),
            ]
        )
    finally:
        taken.close()
    assert found == [
        f"port {busy} (cluster routes of 4222) is taken (ANALYTICS_NATS_URL moves it)",
        f"port {free} is set twice (ANALYTICS_HTTP_PORT and ANALYTICS_ADMIN_PORT)",
    ]
    assert problems([Port("127.0.0.1", free, "ANALYTICS_HTTP_PORT")]) == []


def test_a_valkey_cluster_checks_each_node_and_its_cluster_bus() -> None:
    from deploy.supervisor import VALKEY_CLUSTER_URL

    settings = Settings(redis_url=VALKEY_CLUSTER_URL, admin_port=0)
    found = {(p.port, p.what) for p in planned(settings, projectors=1) if p.variable == "ANALYTICS_REDIS_URL"}
    assert found == {(port, "") for port in range(7001, 7007)} | {
        (port + 10000, f"cluster bus of {port}") for port in range(7001, 7007)
    }


def test_a_valkey_node_whose_cluster_bus_would_pass_65535_is_one_line_naming_the_variable() -> None:
    url = "redis://127.0.0.1:7001,redis://127.0.0.1:60000"
    found = problems(planned(Settings(redis_url=url, http_port=0, admin_port=0), projectors=1))
    assert "port 70000 (cluster bus of 60000) is above 65535 (ANALYTICS_REDIS_URL moves it)" in found


def test_a_nats_node_whose_route_port_would_pass_65535_is_one_line_too() -> None:
    url = "nats://127.0.0.1:4222,nats://127.0.0.1:64000"
    found = problems(planned(Settings(nats_url=url, http_port=0, admin_port=0), projectors=1))
    assert "port 66000 (cluster routes of 64000) is above 65535 (ANALYTICS_NATS_URL moves it)" in found


def test_cluster_up_with_every_port_on_checks_each_with_the_variable_that_moves_it() -> None:
    from deploy.supervisor import CLUSTER_URL, VALKEY_CLUSTER_URL

    settings = Settings(
        nats_url=CLUSTER_URL,
        redis_url=VALKEY_CLUSTER_URL,
        projector_metrics_port=9300,
        audit_metrics_port=9400,
    )
    found = {(p.port, p.variable) for p in planned(settings, projectors=2)}
    assert found == (
        {(port, "ANALYTICS_NATS_URL") for port in (4222, 4223, 4224, 6222, 6223, 6224)}
        | {(port, "ANALYTICS_REDIS_URL") for port in [*range(7001, 7007), *range(17001, 17007)]}
        | {(8080, "ANALYTICS_HTTP_PORT"), (9180, "ANALYTICS_ADMIN_PORT")}
        | {(9300, "ANALYTICS_PROJECTOR_METRICS_PORT"), (9301, "ANALYTICS_PROJECTOR_METRICS_PORT")}
        | {(9400, "ANALYTICS_AUDIT_METRICS_PORT")}
    )


def test_a_second_claim_on_a_held_data_dir_is_one_line_naming_the_holder_and_the_variable(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    held = claim(data)
    try:
        with pytest.raises(SystemExit) as refused:
            claim(data)
        assert str(refused.value) == (
            f"{data} is in use by another stack (pid {os.getpid()}); ANALYTICS_DATA_DIR moves it"
        )
        claim(tmp_path / "other").close()  # another directory is free
    finally:
        held.close()
    claim(data).close()  # released with its holder
