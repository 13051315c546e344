from __future__ import annotations

from pathlib import Path

import pytest

from contract.settings import Settings, SettingsError, field_docs

README = Path(__file__).resolve().parents[2] / "README.md"


def test_defaults_match_the_documented_contract() -> None:
    s = Settings.from_env({})
    assert s.http_port == 8080
    assert s.nats_url == "nats://127.0.0.1:4222"
    assert s.redis_url == "redis://127.0.0.1:6379/0"
    assert s.data_dir == Path(".data")


def test_values_come_from_analytics_variables() -> None:
    s = Settings.from_env({"ANALYTICS_HTTP_PORT": "9000", "ANALYTICS_PUBLISH_TIMEOUT_S": "0.5"})
    assert (s.http_port, s.publish_timeout_s) == (9000, 0.5)


def test_unknown_or_malformed_variables_are_refused() -> None:
    with pytest.raises(SettingsError, match="ANALYTICS_HTTP_PROT"):
        Settings.from_env({"ANALYTICS_HTTP_PROT": "1"})
    with pytest.raises(SettingsError, match="ANALYTICS_HTTP_PORT"):
        Settings.from_env({"ANALYTICS_HTTP_PORT": "eighty"})
    with pytest.raises(SettingsError):
        Settings.from_env({"ANALYTICS_PARTITIONS": "0"})


def test_every_setting_has_a_docstring_and_a_readme_row() -> None:
    docs = field_docs()
    readme = README.read_text()
    for name in Settings.__dataclass_fields__:
        assert docs.get(name), f"{name} has no docstring"
        assert f"`ANALYTICS_{name.upper()}`" in readme, f"README config table lacks {name}"
