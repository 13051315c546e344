"""ANALYTICS_REDIS_WAIT_*: values that would wait forever or outlast the socket timeout are refused."""

from __future__ import annotations

import pytest

from deploy.settings import Settings, SettingsError


def test_wait_is_off_by_default_and_its_bounds_are_checked() -> None:
    assert Settings.from_env({}).redis_wait_replicas == 0
    on = {"ANALYTICS_REDIS_WAIT_REPLICAS": "1", "ANALYTICS_REDIS_WAIT_TIMEOUT_MS": "100"}
    assert Settings.from_env(on).redis_wait_timeout_ms == 100
    with pytest.raises(SettingsError, match="ANALYTICS_REDIS_WAIT_REPLICAS must be 0"):
        Settings.from_env({"ANALYTICS_REDIS_WAIT_REPLICAS": "-1"})
    with pytest.raises(SettingsError, match="wait forever"):
        Settings.from_env({**on, "ANALYTICS_REDIS_WAIT_TIMEOUT_MS": "0"})
    with pytest.raises(SettingsError, match="below ANALYTICS_REDIS_TIMEOUT_S"):
        Settings.from_env({**on, "ANALYTICS_REDIS_WAIT_TIMEOUT_MS": "1000"})
