from __future__ import annotations

from pathlib import Path

import pytest

from deploy.settings import Settings, SettingsError, field_docs, redacted

CONFIG_DOC = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


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


def test_every_setting_has_a_docstring_and_a_row_in_the_configuration_doc() -> None:
    docs = field_docs()
    table = CONFIG_DOC.read_text()
    for name in Settings.__dataclass_fields__:
        assert docs.get(name), f"{name} has no docstring"
        assert f"`ANALYTICS_{name.upper()}`" in table, f"docs/configuration.md lacks {name}"


def test_a_role_takes_its_credentials_from_the_secrets_directory(tmp_path: Path) -> None:
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "nats-projector.url").write_text("nats://projector:pw1@127.0.0.1:4222\n")
    (secrets / "redis-projector.url").write_text("redis://projector:pw2@127.0.0.1:6379/0\n")
    env = {"ANALYTICS_DATA_DIR": str(tmp_path), "ANALYTICS_NATS_URL": "nats://127.0.0.1:5000,nats://h:5001"}
    settings = Settings.from_env(env, role="projector")
    assert settings.nats_url == "nats://projector:pw1@127.0.0.1:5000,nats://projector:pw1@h:5001"
    assert settings.redis_url == "redis://projector:pw2@127.0.0.1:6379/0"
    own = Settings.from_env({**env, "ANALYTICS_NATS_URL": "nats://me:mine@h:1"}, role="projector")
    assert own.nats_url == "nats://me:mine@h:1"  # a URL with its own credentials keeps them
    assert Settings.from_env(env).nats_url == env["ANALYTICS_NATS_URL"]  # no role: nothing added


def test_a_secrets_directory_without_the_roles_file_is_refused_naming_the_file(tmp_path: Path) -> None:
    secrets = tmp_path / "secrets"
    secrets.mkdir()  # as a Kubernetes Secret mounted with one key misnamed
    (secrets / "nats-projector.url").write_text("nats://projector:pw1@127.0.0.1:4222\n")
    env = {"ANALYTICS_DATA_DIR": str(tmp_path)}
    with pytest.raises(
        SettingsError, match=r"secrets/redis-projector\.url is missing: the projector role's redis"
    ):
        Settings.from_env(env, role="projector")
    own = {**env, "ANALYTICS_REDIS_URL": "redis://me:mine@127.0.0.1:6379/0"}
    assert Settings.from_env(own, role="projector").redis_url == own["ANALYTICS_REDIS_URL"]
    assert Settings.from_env(env).redis_url  # no role: no credentials needed


def test_logged_urls_never_show_a_password() -> None:
    assert (
        redacted("nats://admin:s3cret@127.0.0.1:4222,nats://h:1")
        == "nats://admin:***@127.0.0.1:4222,nats://h:1"
    )
    assert "s3cret" not in redacted("redis://api:s3cret@h:6379/0")


@pytest.mark.parametrize(
    ("declared", "why"),
    [
        ("campaign,Campaign", "'Campaign' is not a dimension name"),
        ("campaign,user", "'user' is a parameter of the API itself"),
        ("site,site", "a dimension is named twice"),
        (",".join(f"d{i}" for i in range(17)), "at most 16 dimensions"),
    ],
)
def test_a_bad_list_of_dimensions_is_refused_naming_the_variable(declared: str, why: str) -> None:
    with pytest.raises(SettingsError, match="ANALYTICS_DIMENSIONS") as refused:
        Settings.from_env({"ANALYTICS_DIMENSIONS": declared})
    assert why in str(refused.value)
    assert Settings.from_env({"ANALYTICS_DIMENSIONS": ""}).dimension_names == ()


@pytest.mark.parametrize(
    ("pairs", "why"),
    [
        ("campaign:country", "names 'country', not a declared dimension (campaign, creative, site)"),
        ("campaign", "'campaign:' is not first:second"),
        ("site:site", "pairs a dimension with itself"),
        ("campaign:site,campaign:site", "a pair is named twice"),
        ("campaign:site,site:creative,creative:site,site:campaign,campaign:creative", "at most 4 pairs"),
    ],
)
def test_a_bad_list_of_dimension_pairs_is_refused_naming_the_variable(pairs: str, why: str) -> None:
    with pytest.raises(SettingsError, match="ANALYTICS_DIMENSION_PAIRS") as refused:
        Settings.from_env({"ANALYTICS_DIMENSION_PAIRS": pairs})
    assert why in str(refused.value)


def test_the_default_pair_applies_only_when_both_of_its_dimensions_are_declared() -> None:
    assert Settings.from_env({}).dimension_pair_names == (("campaign", "creative"),)
    assert Settings.from_env({"ANALYTICS_DIMENSIONS": "campaign,site"}).dimension_pair_names == ()
    assert Settings.from_env({"ANALYTICS_DIMENSION_PAIRS": ""}).dimension_pair_names == ()
    both = Settings.from_env({"ANALYTICS_DIMENSION_PAIRS": "site:campaign, campaign:creative"})
    assert both.dimension_pair_names == (("site", "campaign"), ("campaign", "creative"))
