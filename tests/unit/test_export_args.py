"""`./just export` refuses what it cannot give in one line, before it reads anything."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from deploy.settings import Settings
from projector.cli.export_command import ExportArgs, ExportError, export_numbers, moment_ms


@pytest.mark.parametrize(
    ("changes", "says"),
    [
        ({"by": "country"}, r"--by 'country' is not a declared dimension \(campaign, creative, site\)"),
        ({"granularity": "week"}, "--granularity must be hour or day"),
        ({"format": "xml"}, "--format must be csv or ndjson"),
        ({"tz": "Mars/Olympus"}, "not an IANA time zone"),
        ({"start": "yesterday"}, "not an ISO 8601 date or time"),
        ({"end": "2026-11-30"}, "--to must be after --from"),
    ],
)
async def test_an_export_it_cannot_give_is_refused_naming_why(changes: dict[str, Any], says: str) -> None:
    args = dataclasses.replace(ExportArgs("2026-12-01", "2026-12-02"), **changes)
    with pytest.raises(ExportError, match=says):
        await export_numbers(None, Settings(), args, "http://127.0.0.1:1")  # type: ignore[arg-type]  # refused before Redis is read


def test_a_time_without_an_offset_is_in_the_zone_given() -> None:
    assert moment_ms("2026-12-01", ZoneInfo("Asia/Kolkata")) == moment_ms("2026-11-30T18:30:00+00:00", dt.UTC)
