"""`./just audit`'s arguments: hours as YYYYMMDDHH, --since as ISO-8601 (UTC when it names no zone),
and anything else refused in one clear line."""

from __future__ import annotations

import pytest

from contract.hours import parse_hour_token
from deploy.settings import SettingsError
from projector.cli.audit_command import AuditArgs, chosen_hours, since_hour


def test_hours_are_tokens_sorted_and_unique() -> None:
    found = chosen_hours(AuditArgs(hours=["2026112515", "2026112514", "2026112515"]))
    assert found == [parse_hour_token("2026112514"), parse_hour_token("2026112515")]
    assert chosen_hours(AuditArgs()) is None


def test_since_is_the_hour_of_an_iso_time() -> None:
    assert since_hour("2026-11-25T14:30Z") == parse_hour_token("2026112514")
    assert since_hour("2026-11-25T14:30") == parse_hour_token("2026112514")
    assert since_hour("2026-11-25T16:30+02:00") == parse_hour_token("2026112514")


@pytest.mark.parametrize("bad", ["yesterday", "2026-13-01", ""])
def test_a_bad_since_is_one_clear_line(bad: str) -> None:
    with pytest.raises(SettingsError, match="--since must be an ISO-8601 time"):
        since_hour(bad)


def test_a_bad_hour_is_one_clear_line() -> None:
    with pytest.raises(SettingsError, match="hour must be YYYYMMDDHH"):
        chosen_hours(AuditArgs(hours=["2026-11-25"]))
